"""The home's contract: the feature source, dimension and id type that every slice of a home shares.

It is declared in config (``SliceContract.dim`` and ``id_type``), or recorded in ``<home>/contract.json``
by the first slice that is ingested. Each slice is checked against it from its Parquet schema (and
at most its first row, for list columns without a fixed size) before any data is read, so a slice
that does not fit is rejected alone, with both values and how to change the contract; nothing of it
reaches the warehouse, and training never sees it.

The rule for ids: a home's ids are all integers (any width, stored as int64) or all strings. A
slice with the other kind is rejected; convert its ids, or start a new home.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from .atomic import temp_path_for
from .contract import SliceError, SliceSpec, check_schema, features_dim, open_parquet

CONTRACT_FILE = "contract.json"


@dataclass(frozen=True)
class HomeContract:
    features: str  # the list column, or "col1,col2,..." for numeric feature columns
    dim: int
    id_type: str  # "int64" or "string"
    recorded_from: str = "config"  # the slice it was recorded from, or "config"

    @classmethod
    def load(cls, path: Path) -> "HomeContract | None":
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise SliceError(path, f"unreadable home contract ({exc}); fix it or delete it to record a new one") from exc

    def claim(self, path: Path) -> "HomeContract":
        """Record this contract at ``path`` unless one is there already; return the one that holds."""
        tmp = temp_path_for(path)
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        try:
            os.link(tmp, path)  # atomic create-if-absent: of two first slices, one wins
            return self
        except FileExistsError:
            return HomeContract.load(path) or self
        finally:
            tmp.unlink(missing_ok=True)


def slice_facts(path: Path, spec: SliceSpec, source: str) -> HomeContract:
    """A slice's feature source, dimension and id kind, from its schema (and at most its first row)."""
    pf = open_parquet(path)
    schema = pf.schema_arrow
    check_schema(path, schema, spec)
    id_type = "int64" if pa.types.is_integer(schema.field(spec.id_column).type) else "string"
    if spec.feature_columns:
        return HomeContract(",".join(spec.feature_columns), len(spec.feature_columns), id_type, source)
    dim = features_dim(schema.field(spec.features_column))
    if dim is None:
        first = next(pf.iter_batches(batch_size=1, columns=[spec.features_column]), None)
        dim = len(first.column(0)[0].values) if first is not None and first.num_rows else 0
    return HomeContract(spec.features_column, dim, id_type, source)


def check_slice(path: Path, facts: HomeContract, contract: HomeContract, contract_path: Path) -> None:
    """Reject the slice at ``path`` when its ``facts`` break ``contract``, naming both values."""
    where = ("declared in config (SliceContract)" if contract.recorded_from == "config"
             else f"recorded in {contract_path} from slice '{contract.recorded_from}'")
    how = ("change SliceContract in config" if contract.recorded_from == "config"
           else f"if this slice is right, delete {contract_path} and the slices that do not fit, or declare it in SliceContract")
    for name, mine, theirs in (("features", facts.features, contract.features), ("dimension", facts.dim, contract.dim),
                               ("id type", facts.id_type, contract.id_type)):
        if mine != theirs:
            raise SliceError(path, f"{name} is {mine}, but the home's contract ({where}) says {theirs}; {how}")
