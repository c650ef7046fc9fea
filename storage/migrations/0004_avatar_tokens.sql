-- HeyGen LiveAvatar sessions: which avatar sessions live at a provider (and so must be stopped there),
-- when one was stopped, and the sweeper's index. Tokens are stored encrypted (storage/token_cipher.py).

-- Null for the avatar rendered on this server; 'liveavatar' for a HeyGen LiveAvatar session.
alter table avatar_sessions add column provider varchar(50);
alter table avatar_sessions add column stopped_at timestamptz;

-- Compared with now() by the sweeper: an instant, not a wall-clock reading. Old values are read as UTC.
alter table avatar_sessions alter column expires_at type timestamptz using expires_at at time zone 'UTC';

-- The sweeper's candidates: provider sessions not yet stopped.
create index avatar_sessions_unstopped_idx on avatar_sessions(user_session_id)
    where provider is not null and coalesce(session_status, '') not in ('ended', 'stopped');
