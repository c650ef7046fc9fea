-- Usage per user, UTC day and usage type, for the page's month chart (GET /api/v1/usage/daily).
-- Filled by a trigger on usage_ledger, so every path that raises `used` (call meters' flushes, REST voice
-- usage, anything added later) is counted per day without knowing this table exists.
-- Amounts are in the ledger's base units: microseconds for *_seconds types, characters, tokens.
-- Counting starts with this migration: usage metered before it has no day and is not back-filled.

create table usage_daily (
    user_id varchar(255) not null references users(id) on delete cascade,
    day date not null,
    usage_type varchar(50) not null,
    amount bigint not null default 0 check (amount >= 0),
    primary key (user_id, day, usage_type)
);

-- The rise of `used` lands on the database's current UTC day, held inside the ledger row's month: a flush
-- written for another month (a call that crossed midnight at a month's end, or a test's explicit `now`)
-- still sums to that month's ledger total.
create function usage_ledger_count_daily() returns trigger language plpgsql as $$
declare
    rise bigint := new.used - (case when tg_op = 'INSERT' then 0 else old.used end);
    today date := (now() at time zone 'UTC')::date;
    last_day date := (new.period + interval '1 month' - interval '1 day')::date;
begin
    if rise > 0 then
        insert into usage_daily as d (user_id, day, usage_type, amount)
        values (new.user_id, greatest(new.period, least(today, last_day)), new.usage_type, rise)
        on conflict (user_id, day, usage_type) do update set amount = d.amount + excluded.amount;
    end if;
    return null;
end;
$$;

-- Reservations change `reserved` only; the WHEN clauses keep those updates away from the function.
create trigger usage_ledger_daily_on_insert
    after insert on usage_ledger
    for each row when (new.used > 0)
    execute function usage_ledger_count_daily();
create trigger usage_ledger_daily_on_update
    after update of used on usage_ledger
    for each row when (new.used > old.used)
    execute function usage_ledger_count_daily();
