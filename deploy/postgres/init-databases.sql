-- deploy/compose.yaml's PostgreSQL, on its first start (an empty volume): one database per service,
-- owned by the xinfang role (POSTGRES_USER). The services never read each other's tables; each
-- service's migrations create its tables at its start (or `docker compose run --rm cli migrate`).
CREATE DATABASE xinfang_intake;
CREATE DATABASE xinfang_routing;
CREATE DATABASE xinfang_supervision;
CREATE DATABASE xinfang_scoring;
