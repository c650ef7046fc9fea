-- Users, their call sessions, and avatar sessions with their events.

create table users (
    id varchar(255) primary key,            -- the JWT `sub` (Supabase auth user id)
    created_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now()
);

create table user_sessions (
    id uuid primary key default gen_random_uuid(),
    user_id varchar(255) not null references users(id) on delete cascade,
    status varchar(50) not null default 'created',   -- created, connecting, connected, ended
    end_reason varchar(50),
    node_id varchar(255),
    avatar_session_id varchar(255),
    avatar_session_token text,
    avatar_session_expires_at timestamptz,
    avatar_status varchar(50),
    agent_session_id varchar(255),
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    connected_at timestamptz,
    ended_at timestamptz
);
create index user_sessions_user_id_idx on user_sessions(user_id, created_at desc);
create index user_sessions_live_idx on user_sessions(node_id) where status <> 'ended';

create table avatar_sessions (
    id uuid primary key default gen_random_uuid(),
    user_session_id uuid references user_sessions(id) on delete cascade,
    heygen_session_id varchar(255) not null,
    heygen_session_token text not null,
    avatar_id varchar(255) not null,
    session_status varchar(50) default 'active',
    quality_setting varchar(50) default 'medium',
    voice_id varchar(255),
    created_at timestamp default now(),
    expires_at timestamp,
    last_activity_at timestamp default now(),
    total_streaming_time integer default 0,
    quota_consumed decimal(10,2) default 0.00
);
create index avatar_sessions_user_session_idx on avatar_sessions(user_session_id);

create table avatar_session_events (
    id uuid primary key default gen_random_uuid(),
    avatar_session_id uuid references avatar_sessions(id) on delete cascade,
    event_type varchar(50) not null,
    event_data jsonb,
    duration_seconds integer,
    quota_cost decimal(10,2) default 0.00,
    timestamp timestamp default now()
);
create index avatar_session_events_session_idx on avatar_session_events(avatar_session_id, timestamp);
