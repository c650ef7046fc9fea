-- The conversation of each session: user turns (spoken or typed) and agent replies, in order.
-- seq orders a session's messages and is the position a page cursor names; id is made by the
-- server before the row is written, so a reply can be answered with its id and corrected later
-- (an interrupted reply keeps only what was spoken).

create table messages (
    seq bigint generated always as identity primary key,
    id uuid not null unique,
    session_id uuid not null references user_sessions(id) on delete cascade,
    role varchar(10) not null check (role in ('user', 'agent')),
    source varchar(10) not null check (source in ('voice', 'text')),
    content text not null,
    created_at timestamptz not null default now(),
    -- A spoken user turn: its speech on the call's inbound audio clock (ms since the call's first frame).
    turn_start_ms bigint check (turn_start_ms >= 0),
    turn_end_ms bigint check (turn_end_ms >= turn_start_ms),
    interrupted boolean not null default false,
    spoken_characters integer check (spoken_characters >= 0),
    generated_characters integer check (generated_characters >= 0)
);
create index messages_session_seq_idx on messages(session_id, seq);
