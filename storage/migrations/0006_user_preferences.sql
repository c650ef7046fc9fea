-- Each user's defaults for new sessions (PUT /api/v1/users/me/preferences); no row means the defaults.
-- avatar_id / voice_id name entries of the engines' catalogues, checked by the API when set: a
-- catalogue can shrink later, so a stored id may go stale and is then ignored, not refused.
create table user_preferences (
    user_id varchar(255) primary key references users(id) on delete cascade,
    avatar_id varchar(255),
    voice_id varchar(255),
    quality varchar(20) not null default 'medium',
    enable_avatar boolean not null default false,
    updated_at timestamptz not null default now()
);

-- The TTS voice a session's call speaks in (the request's or the preferred voice_id); null: the engine's own.
alter table user_sessions add column voice_id varchar(255);
