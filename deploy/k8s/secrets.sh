#!/bin/sh
# Prints the Secrets and the ConfigMap the manifests of this folder reference (never kept in git), from
# files the province keeps in its own secret store; apply them with:
#
#   deploy/k8s/secrets.sh SECRETS_DIR CONFIG_DIR [NAMESPACE] | kubectl apply --server-side -f -
#
# (server-side: the directory and auth.conf are too large for kubectl's last-applied annotation).
# SECRETS_DIR holds, each made by the command beside it (the image runs them: README, "Running a
# province on Kubernetes"):
#   keys.env             xinfang keys init --print > keys.env    XF_ID_HASH_KEY, XF_QUERY_CODE_KEY
#   db.env               by hand, one line per service:           XF_INTAKE_DB_URL=postgresql://…, XF_ROUTING_DB_URL=…,
#                                                                 XF_SUPERVISION_DB_URL=…, XF_SCORING_DB_URL=…
#   nats/                xinfang nats-config --out nats           auth.conf and each user's credentials
#   tokens/tokens.json   xinfang token create --role …            with XF_TOKENS_FILE=tokens/tokens.json
# CONFIG_DIR is the county's directory (deploy/config is the sample county).
#
# Secret → what reads it:
#   xinfang-keys        intake, supervision (env), the migrate Job
#   xinfang-db          each service its own URL (env), the migrate Job
#   xinfang-nats-creds  each service its svc_<service>.json, the declare-streams Job admin.json
#   xinfang-nats-auth   the NATS servers (nats-values.yaml mounts it, includes auth.conf)
#   xinfang-tokens      every service (XF_TOKENS_FILE)
#   ConfigMap xinfang-config   every service (/etc/xinfang/config, XF_CONFIG_DIR)
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 SECRETS_DIR CONFIG_DIR [NAMESPACE]   (see the top of this file)" >&2
    exit 2
fi
secrets=$1
config=$2
namespace=${3:-xinfang}
KUBECTL=${KUBECTL:-kubectl}

need() {
    if [ ! -e "$1" ]; then
        echo "missing $1: make it with $2" >&2
        exit 2
    fi
}
need "$secrets/keys.env" "\`xinfang keys init --print > $secrets/keys.env\`"
need "$secrets/db.env" "one XF_<SERVICE>_DB_URL=postgresql://user:password@host:5432/database line per service"
need "$secrets/nats/auth.conf" "\`xinfang nats-config --out $secrets/nats\`"
for service in intake routing supervision scoring; do
    need "$secrets/nats/svc_$service.json" "\`xinfang nats-config --out $secrets/nats\`"
done
need "$secrets/nats/admin.json" "\`xinfang nats-config --out $secrets/nats\`"
need "$secrets/tokens/tokens.json" "\`XF_TOKENS_FILE=$secrets/tokens/tokens.json xinfang token create --role …\`"
need "$config/county.yaml" "the county's directory (deploy/config is the sample)"

object() {  # kubectl create … as YAML, labelled, never sent anywhere
    "$KUBECTL" create --dry-run=client -o yaml -n "$namespace" "$@" \
        | "$KUBECTL" label --local -f - -o yaml app.kubernetes.io/part-of=xinfang
    echo "---"
}

object secret generic xinfang-keys --from-env-file="$secrets/keys.env"
object secret generic xinfang-db --from-env-file="$secrets/db.env"
# The services' users, admin (the streams) and ops (`xinfang tail`); each department gets its own
# unit_<code>.json from the bureau, not from the cluster.
object secret generic xinfang-nats-creds \
    --from-file="admin.json=$secrets/nats/admin.json" \
    --from-file="ops.json=$secrets/nats/ops.json" \
    --from-file="svc_intake.json=$secrets/nats/svc_intake.json" \
    --from-file="svc_routing.json=$secrets/nats/svc_routing.json" \
    --from-file="svc_supervision.json=$secrets/nats/svc_supervision.json" \
    --from-file="svc_scoring.json=$secrets/nats/svc_scoring.json"
object secret generic xinfang-nats-auth --from-file="auth.conf=$secrets/nats/auth.conf"
object secret generic xinfang-tokens --from-file="tokens.json=$secrets/tokens/tokens.json"
object configmap xinfang-config --from-file="$config"
