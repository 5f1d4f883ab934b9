import services.routing.learning  # noqa: F401 - declares the examples table on the same metadata
from services.routing.tables import metadata
from shared.db import run_alembic_env

run_alembic_env(metadata)
