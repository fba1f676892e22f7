"""Settings of the nightly run, read from a TOML file (``fairshare.toml``) and validated.

Every relative path is taken relative to the folder that holds the settings file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tariffs.errors import ConfigError


class NightlyConfig(BaseModel):
    """Where the nightly run finds its inputs and puts its outputs."""

    model_config = ConfigDict(extra="forbid")

    inbox: Path = Field(Path("inbox"), description="folder with meter/, prices/, customers/")
    archive: Path = Field(Path("archive"), description="processed inbox files move here")
    runs: Path = Field(Path("runs"), description="run manifests and Parquet snapshots")
    products: Path = Field(Path("data/products"), description="product files (*.toml)")
    back_billing_months: int = Field(9, ge=0, description="NERR limit on undercharge rebills")
    snapshot: bool = Field(True, description="write the read-only Parquet snapshot")
    final_adjustment_bills: bool = Field(
        True,
        description="issue a moved-out account a final adjustment bill for the adjustments no "
        "later bill will take (false: leave them pending, reported every run)",
    )

    def resolved(self, base: Path) -> NightlyConfig:
        """A copy with every path made absolute against ``base``."""
        return self.model_copy(
            update={
                k: (base / v if not Path(v).is_absolute() else Path(v))
                for k, v in self.model_dump().items()
                if isinstance(v, Path)
            }
        )


def load_config(path: Path | None) -> NightlyConfig:
    """Read ``[nightly]`` from a TOML file; ``None`` gives the defaults relative to the cwd."""
    if path is None:
        return NightlyConfig().resolved(Path.cwd())
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read settings: {exc}") from exc
    try:
        cfg = NightlyConfig.model_validate(data.get("nightly", {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: nightly.{key}: {first['msg']}") from exc
    return cfg.resolved(path.parent.resolve())
