-- A store charges in its own currency (a chain may span countries): what is paid there, and the price an
-- appointment is booked at, are in it. A service lists its price in its own currency and, for stores that
-- charge in others, in those: {"GBP": 4500}.
alter table stores add column currency text not null default 'CNY';
alter table services add column prices jsonb not null default '{}'::jsonb;
