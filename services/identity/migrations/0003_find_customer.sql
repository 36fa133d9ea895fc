-- Lookup by identifier in one round trip with plans cached per session (a PL/pgSQL function's
-- statements are prepared once per connection): a strong identifier's owner (its survivor if merged),
-- else the one profile holding the weak identifier, else null. The API's hottest read.

-- Merged profiles are few: this index tells a lookup whether an owner was merged (and into whom)
-- without reading customers, so a lookup reads two pages that may be outside the cache, not four.
create index customers_merged on customers (customer_id) include (merged_into) where merged_into is not null;

create function find_customer(p_tenant text, p_type text, p_scope text, p_token text) returns uuid
language plpgsql stable as $$
declare
    owner    uuid;
    survivor uuid;
    holders  uuid[];
begin
    select i.customer_id into owner
      from identity.identifiers i
     where i.tenant_id = p_tenant and i.id_type = p_type and i.id_scope = p_scope and i.token = p_token
       and not i.junk;
    if owner is not null then  -- the foreign key guarantees its customers row
        select c.merged_into into survivor
          from identity.customers c where c.customer_id = owner and c.merged_into is not null;
        return coalesce(survivor, owner);
    end if;
    select array_agg(w.customer_id) into holders
      from (select distinct customer_id from identity.weak_identifiers
             where tenant_id = p_tenant and id_type = p_type and id_scope = p_scope and token = p_token
             limit 2) w;
    return case when cardinality(holders) = 1 then holders[1] end;
end
$$;
