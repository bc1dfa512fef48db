#!/bin/sh
# Make the stack's secret files under ./secrets (one per secret, mode 0600), keeping any that
# exist: run it once before the first `docker compose up`, and again after adding a secret to
# docker-compose.yml. To change one, delete its file, run this, then follow docs/deploy.md
# ("Changing a secret"): the database password, for one, must also be changed in PostgreSQL.
set -eu
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets
make() { # name, then the command that prints a new value
  name=$1; shift
  if [ -s "secrets/$name" ]; then
    echo "kept    secrets/$name"
  else
    "$@" > "secrets/$name.tmp" && mv "secrets/$name.tmp" "secrets/$name"
    echo "made    secrets/$name"
  fi
}
random() { openssl rand -base64 "$1" | tr -d '\n/+=' | cut -c1-"$2"; }
make postgres_password      random 48 40
make api_secret_key         random 64 64
make api_metrics_token      random 48 40
make admin_password         random 24 20
make s3_admin_access_key    sh -c 'printf "COUNTY"; openssl rand -hex 8 | tr a-f A-F'
make s3_admin_secret_key    random 48 40
make gateway_api_password   random 48 40
make gateway_s3_access_key  sh -c 'printf "GWTS01"; openssl rand -hex 8 | tr a-f A-F'
make gateway_s3_secret_key  random 48 40
echo "the first admin's password is in secrets/admin_password"
