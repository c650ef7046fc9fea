-- Counting a user's open sessions (the per-user call limit) without reading their whole history.
create index user_sessions_open_by_user_idx on user_sessions(user_id) where status <> 'ended';
