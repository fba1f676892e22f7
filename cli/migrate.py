"""``fairshare migrate``: bring a store's schema up to this fairshare's version."""

from __future__ import annotations

from cli.common import DEFAULT_DB_PATH, DbOption, JsonOption, out, print_json, run_guarded
from settlement.schema import MIGRATIONS
from settlement.store import Store


def migrate(db: DbOption = DEFAULT_DB_PATH, as_json: JsonOption = False) -> None:
    """Apply the schema migrations the store has not seen (every command that writes does this
    first; read-only commands refuse an older store and name this command). Safe to repeat.

    Example: fairshare migrate --db fairshare.duckdb
    """

    def go() -> None:
        with Store.open(db) as store:
            version = store.schema_version()
        descriptions = {m.version: m.description for m in MIGRATIONS}
        applied = [{"version": v, "description": descriptions[v]} for v in store.migrated]
        if as_json:
            print_json({"store": str(db), "schema_version": version, "applied": applied})
            return
        for a in applied:
            out.print(f"applied v{a['version']}: {a['description']}")
        out.print(f"{db}: schema version {version}" + ("" if applied else " (nothing to apply)"))

    run_guarded(go)
