-- Exact metering, the monthly usage ledger, plans, quotas and their reservations, server nodes.
-- Every amount is an integer in its base unit: microseconds for *_seconds types, characters, tokens.

create table plans (
    name varchar(50) primary key,
    created_at timestamptz not null default now()
);

-- A usage type a plan does not list is not limited by it, like a null limit.
create table plan_limits (
    plan varchar(50) not null references plans(name) on delete cascade,
    usage_type varchar(50) not null,
    monthly_limit bigint check (monthly_limit >= 0),   -- null = unlimited
    primary key (plan, usage_type)
);

insert into plans(name) values ('free');
insert into plan_limits(plan, usage_type, monthly_limit) values
    ('free', 'mic_audio_seconds',    3600 * 1000000::bigint),
    ('free', 'speech_audio_seconds', 3600 * 1000000::bigint),
    ('free', 'avatar_video_seconds', 1800 * 1000000::bigint),
    ('free', 'stt_seconds',          3600 * 1000000::bigint),
    ('free', 'tts_characters',       200000),
    ('free', 'agent_tokens',         null);

alter table users add column plan varchar(50) not null default 'free' references plans(name);

-- A row here replaces the plan's limit for that type, a null row making it unlimited.
create table user_quota_overrides (
    user_id varchar(255) not null references users(id) on delete cascade,
    usage_type varchar(50) not null,
    monthly_limit bigint check (monthly_limit >= 0),
    updated_at timestamptz not null default now(),
    primary key (user_id, usage_type)
);

-- The absolute running total of each meter of a call; only ever raised.
create table session_meters (
    session_id uuid not null references user_sessions(id) on delete cascade,
    meter varchar(50) not null,
    kind varchar(20) not null check (kind in ('audio', 'video', 'time', 'count')),
    direction varchar(20) not null check (direction in ('inbound', 'outbound', 'none')),
    usage_type varchar(50),
    amount bigint not null check (amount >= 0),
    updated_at timestamptz not null default now(),
    primary key (session_id, meter)
);

-- period: the first day of the UTC month. used: consumed; reserved: granted to live calls, not yet consumed.
create table usage_ledger (
    user_id varchar(255) not null references users(id) on delete cascade,
    period date not null check (extract(day from period) = 1),
    usage_type varchar(50) not null,
    used bigint not null default 0 check (used >= 0),
    reserved bigint not null default 0 check (reserved >= 0),
    primary key (user_id, period, usage_type)
);

-- What each call holds of its user's quota: granted chunks minus what its meters have consumed.
create table quota_reservations (
    session_id uuid not null references user_sessions(id) on delete cascade,
    usage_type varchar(50) not null,
    user_id varchar(255) not null references users(id) on delete cascade,
    period date not null,
    reserved bigint not null default 0 check (reserved >= 0),
    primary key (session_id, usage_type)
);
create index quota_reservations_held_idx on quota_reservations(user_id, period, usage_type) where reserved > 0;

-- A reservation deleted with its session gives its hold back, so the ledger never keeps a dead call's grant.
create function quota_reservation_returned() returns trigger language plpgsql as $$
begin
    if old.reserved > 0 then
        update usage_ledger set reserved = greatest(reserved - old.reserved, 0)
        where user_id = old.user_id and period = old.period and usage_type = old.usage_type;
    end if;
    return old;
end;
$$;
create trigger quota_reservations_return_on_delete
    after delete on quota_reservations
    for each row execute function quota_reservation_returned();

-- Server processes; one that stops heartbeating has its live calls ended by the others.
create table nodes (
    node_id varchar(255) primary key,
    started_at timestamptz not null default now(),
    heartbeat_at timestamptz not null default now()
);
create index nodes_heartbeat_idx on nodes(heartbeat_at);
