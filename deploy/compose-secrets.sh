#!/bin/sh
# Makes every secret deploy/compose.yaml reads, under secrets/ beside it, and .env (who the containers
# run as). Run it from anywhere, once before the first `docker compose up`, and again after a change
# of the directory (new units: new NATS users; existing passwords, keys and tokens are kept):
#
#   docker compose build cli && ./compose-secrets.sh
#
# What it makes (0600 files in 0700 folders, owned by the user who ran it; by uid 10001, the image's
# user, when run as root) and with which command:
#   secrets/keys.json                        xinfang keys init          the keys of the keyed hashes
#   secrets/nats/auth.conf, *.json           xinfang nats-config        NATS users (bcrypt) and their credentials
#   secrets/tokens/tokens.json               xinfang token create --role …   the API tokens (hashed)
#   secrets/first-tokens.txt                                            the first clerk's and supervisor's tokens
#   secrets/db_password, secrets/pgpass      (random, here)             PostgreSQL's password, and libpq's file of it
#   secrets/grafana_admin_password           (random, here)             Grafana's admin
#   .env                                     XINFANG_UID / XINFANG_GID  the owner of secrets/
#
# The xinfang commands run in the image (`docker compose run --rm cli …`); XINFANG=<command> runs them
# another way (the tests use the project's own `xinfang` with XF_DATA_DIR pointing here).
set -eu
cd "$(dirname "$0")"
umask 077

if [ ! -f .env ]; then
    if [ "$(id -u)" = 0 ]; then
        printf 'XINFANG_UID=10001\nXINFANG_GID=10001\n' > .env
    else
        printf 'XINFANG_UID=%s\nXINFANG_GID=%s\n' "$(id -u)" "$(id -g)" > .env
    fi
    echo "made .env: the containers run as the owner of secrets/"
fi
owner=$(sed -n 's/^XINFANG_UID=//p' .env):$(sed -n 's/^XINFANG_GID=//p' .env)

mkdir -p secrets/nats secrets/tokens
chmod 700 secrets secrets/nats secrets/tokens
# The image's user writes into secrets/ (keys, NATS users, tokens): it must own it.
if [ "$(id -u)" = 0 ]; then chown -R "$owner" secrets; fi

XINFANG=${XINFANG:-docker compose run --rm --no-deps -T cli}

random_secret() {  # 48 hex characters (192 bits)
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

$XINFANG keys init
$XINFANG nats-config >/dev/null
echo "NATS users: secrets/nats/ (auth.conf for the servers, one credentials file per user)"

if [ ! -f secrets/db_password ]; then
    password=$(random_secret)
    printf '%s\n' "$password" > secrets/db_password
    # host:port:database:user:password; the services' URLs name no password (compose.yaml).
    printf 'postgres:5432:*:xinfang:%s\n' "$password" > secrets/pgpass
    echo "PostgreSQL: secrets/db_password and secrets/pgpass"
fi
if [ ! -f secrets/grafana_admin_password ]; then
    random_secret > secrets/grafana_admin_password
    echo "Grafana: the admin's password is in secrets/grafana_admin_password"
fi

if [ ! -f secrets/tokens/tokens.json ]; then
    clerk=$($XINFANG token create --role clerk --staff clerk1 --note "first start: the intake desk")
    supervisor=$($XINFANG token create --role supervisor --staff office1 --note "first start: the supervision office")
    printf 'clerk: %s\nsupervisor: %s\n' "$clerk" "$supervisor" > secrets/first-tokens.txt
    echo "API tokens: a clerk's and a supervisor's in secrets/first-tokens.txt (\`xinfang token create --role …\` makes more)"
fi

if [ "$(id -u)" = 0 ]; then chown -R "$owner" secrets; fi
echo "secrets/ is complete for compose.yaml"
