#!/usr/bin/env bash
# Development only, before the first release: rebuild the initial migration from the models.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f maild/storage/migrations/versions/0001_initial_schema.py /tmp/maild-regen.db
.venv/bin/python - <<'PY'
from alembic import command
from maild.storage.db import alembic_config, make_engine
engine = make_engine("sqlite:////tmp/maild-regen.db")
command.revision(alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001")
PY
sed -i 's/maild\.storage\.models\.UtcDateTime()/sa.DateTime()/g; /^import maild.storage.models$/d' maild/storage/migrations/versions/0001_initial_schema.py
