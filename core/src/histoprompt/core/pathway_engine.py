"""PathwayEngine: gene-set queries against a slide's aligned embedding, by any method.

`query` never lets one bad gene set fail the others: every set is resolved on its own, and
failures come back in `PathwayQueryResult.errors` (score NaN) next to the good scores.

Serving (Triton `pathway_query`): one Triton request is one `query` call, so "a bad gene set
fails its own request only" means that call must fail as a whole. `strict=True` (what `load`
sets up) does exactly that: any failed set raises `GeneSetQueryError` (an InvalidInputError,
code `invalid_gene_set`) whose message lists every failed set; model.py maps it to
INVALID_ARG for that request and the other requests in the batch are untouched. Problems
that concern the whole request (embedding width, unknown method) raise InvalidInputError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.errors import HistopromptError, InvalidInputError
from histoprompt.core.genesets import (
    Coverage,
    GeneSetCollection,
    ResolvedGeneSet,
    load_hallmark,
    parse_query,
)
from histoprompt.core.readable_scores import percentile_and_z
from histoprompt.core.reference import EmbedFn, ReferenceDB
from histoprompt.core.schemas import PathwayScore
from histoprompt.core.softknn import SoftKnn, SoftKnnConfig, unit_rows

if TYPE_CHECKING:
    from histoprompt.core.settings import ConnectionSettings

__all__ = [
    "GeneSetFailure",
    "GeneSetQueryError",
    "PathwayEngine",
    "PathwayQueryResult",
    "Predictor",
    "UnknownMethodError",
]

DEFAULT_METHOD = "soft_knn"
# Methods that predict on the reference's raw ssGSEA scale (readable scores apply).
RAW_SCALE_METHODS = frozenset({"soft_knn", "ridge", "mlp"})


def _opt(values: NDArray[Any] | None, row: int, col: int) -> float | None:
    if values is None or not np.isfinite(values[row, col]):
        return None
    return float(values[row, col])


class UnknownMethodError(InvalidInputError):
    """A METHOD the server does not offer (a request-level InvalidInputError)."""


class GeneSetQueryError(InvalidInputError):
    """Strict mode: one or more gene sets of a query cannot be scored."""

    code = "invalid_gene_set"

    def __init__(self, result: PathwayQueryResult) -> None:
        super().__init__(result.error_message())
        self.result = result
        self.failures = list(result.errors)


class Predictor(Protocol):
    """What the engine needs from a scoring method."""

    @property
    def method(self) -> str: ...

    def supports(self, resolved: ResolvedGeneSet) -> str | None:
        """None when the set can be scored, else why not."""

    def predict(
        self, slide_embeddings: NDArray[Any], gene_sets: Sequence[ResolvedGeneSet]
    ) -> NDArray[Any]:
        """float32 [B, K] for unit-normalisable embeddings [B, E]."""


@dataclass(frozen=True)
class GeneSetFailure:
    """Why one gene set of a query could not be scored."""

    index: int
    query: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"gene set #{self.index}: {self.message}"


@dataclass
class PathwayQueryResult:
    """Scores of B slides x K gene sets; failed sets have NaN scores and an entry in errors."""

    names: list[str]
    scores: NDArray[Any]  # float32 [B, K]
    coverage: NDArray[Any]  # float32 [K], found / total (0 when the set never parsed)
    method: str
    coverages: list[Coverage | None] = field(default_factory=list)
    errors: list[GeneSetFailure] = field(default_factory=list)
    # Readable scores (histoprompt.core.readable_scores): against the reference's
    # distribution of each set; None for a method not on the raw ssGSEA scale.
    percentiles: NDArray[Any] | None = None
    zscores: NDArray[Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def __getitem__(self, i: int) -> NDArray[Any]:
        """`result[0]` scores, `result[1]` coverage: the SCORES and COVERAGE tensors."""
        return (self.scores, self.coverage)[i]

    def error_message(self) -> str:
        return "; ".join(str(e) for e in self.errors)

    def pathway_scores(self, row: int = 0) -> dict[str, PathwayScore]:
        """`pathways.json` entries for one slide (failed sets left out)."""
        failed = {e.index for e in self.errors}
        return {
            name: PathwayScore(
                score=float(self.scores[row, j]),
                method=self.method,
                coverage=float(self.coverage[j]),
                percentile=_opt(self.percentiles, row, j),
                z=_opt(self.zscores, row, j),
            )
            for j, name in enumerate(self.names)
            if j not in failed
        }


class PathwayEngine:
    """Resolves gene-set queries against a reference and scores them with a chosen method."""

    def __init__(
        self,
        reference: ReferenceDB,
        *,
        collection: GeneSetCollection | None = None,
        predictors: Sequence[Predictor] = (),
        default_method: str = DEFAULT_METHOD,
        strict: bool = False,
    ) -> None:
        self.reference = reference
        self.strict = strict
        self.collection = collection or load_hallmark()
        self.predictors: dict[str, Predictor] = {p.method: p for p in predictors}
        if default_method not in self.predictors:
            raise InvalidInputError(
                f"default method {default_method!r} is not among {sorted(self.predictors)}"
            )
        self.default_method = default_method

    @classmethod
    def for_reference(
        cls,
        reference: ReferenceDB,
        *,
        embed_fn: EmbedFn | None = None,
        trained: Sequence[Predictor] = (),
        soft_knn: SoftKnnConfig | None = None,
        collection: GeneSetCollection | None = None,
        warm: bool = True,
        strict: bool = False,
    ) -> PathwayEngine:
        """Soft-kNN always; prototype prompting when an RNA embed function is given."""
        coll = collection or load_hallmark()
        knn = SoftKnn(reference, soft_knn, hallmark=coll)
        if warm:
            knn.warm()
        methods: list[Predictor] = [knn, *trained]
        if embed_fn is not None:
            from histoprompt.core.prototype import PrototypeScorer

            methods.append(PrototypeScorer(reference, embed_fn))
        return cls(reference, collection=coll, predictors=methods, strict=strict)

    @classmethod
    def load(
        cls,
        uri: str,
        *,
        settings: ConnectionSettings | None = None,
        embed_fn: EmbedFn | None = None,
        trained: Sequence[Predictor] = (),
        strict: bool = True,
    ) -> PathwayEngine:
        """The serving entry point: reference from a local path or `s3://` URI, warmed up.

        S3 credentials come from `settings` (default: `ConnectionSettings.load()`, i.e. the
        HISTOPROMPT_* environment of the Triton server). `trained` adds served predictors
        (method `predictor`: the bundle's ONNX heads, see histoprompt.serving.predictor).
        """
        from histoprompt.core.reference_store import load_reference_uri

        client = None
        if uri.startswith("s3://"):
            from histoprompt.core.s3 import make_minio
            from histoprompt.core.settings import ConnectionSettings

            client = make_minio(settings or ConnectionSettings.load())
        reference = load_reference_uri(uri, client)
        return cls.for_reference(reference, embed_fn=embed_fn, trained=trained, strict=strict)

    @property
    def methods(self) -> list[str]:
        return sorted(self.predictors)

    def predictor(self, method: str | None) -> Predictor:
        name = (method or "").strip() or self.default_method
        try:
            return self.predictors[name]
        except KeyError as err:
            raise UnknownMethodError(
                f"unknown method {name!r}; this server offers {', '.join(self.methods)}"
            ) from err

    def resolve(self, query: str, index: int = 0) -> ResolvedGeneSet | GeneSetFailure:
        """One query string -> a resolved set, or the reason it cannot be scored."""
        try:
            gene_set = parse_query(query, self.collection)
            return self.reference.gene_index.resolve(gene_set)
        except HistopromptError as err:
            return GeneSetFailure(index, query[:200], err.code, err.message)

    def validate(self, gene_sets: Sequence[str], method: str | None = None) -> list[GeneSetFailure]:
        """Every problem `query` would report, without scoring anything."""
        pred = self.predictor(method)
        failures = []
        for i, q in enumerate(gene_sets):
            r = self.resolve(q, i)
            if isinstance(r, GeneSetFailure):
                failures.append(r)
            elif (why := pred.supports(r)) is not None:
                failures.append(GeneSetFailure(i, q[:200], "unsupported_gene_set", why))
        return failures

    def query(
        self,
        slide_embeddings: NDArray[Any],
        gene_sets: Sequence[str],
        method: str | None = None,
        *,
        strict: bool | None = None,
    ) -> PathwayQueryResult:
        """Scores float32 [B, K] for slide embeddings [B, E] and K gene-set queries.

        `strict` (default: the engine's) raises GeneSetQueryError instead of returning
        a result with errors.
        """
        pred = self.predictor(method)
        emb = unit_rows(slide_embeddings, self.reference.embed_dim)
        if not gene_sets:
            raise InvalidInputError("no gene sets given")
        k = len(gene_sets)
        scores = np.full((emb.shape[0], k), np.nan, dtype=np.float32)
        coverage = np.zeros(k, dtype=np.float32)
        names: list[str] = []
        coverages: list[Coverage | None] = []
        errors: list[GeneSetFailure] = []
        good: list[tuple[int, ResolvedGeneSet]] = []
        for i, q in enumerate(gene_sets):
            r = self.resolve(q, i)
            if isinstance(r, GeneSetFailure):
                names.append(_name_of(q, self.collection))
                cov = _coverage_of_failure(q, self)
                coverages.append(cov)
                coverage[i] = cov.fraction if cov is not None else 0.0
                errors.append(r)
                continue
            names.append(r.name)
            coverages.append(r.coverage)
            coverage[i] = r.coverage.fraction
            why = pred.supports(r)
            if why is not None:
                errors.append(GeneSetFailure(i, q[:200], "unsupported_gene_set", why))
                continue
            good.append((i, r))
        if good:
            cols = [i for i, _ in good]
            scores[:, cols] = pred.predict(emb, [r for _, r in good])
        result = PathwayQueryResult(names, scores, coverage, pred.method, coverages, errors)
        if good and pred.method in RAW_SCALE_METHODS:
            self._readable(result, good)
        if errors and (self.strict if strict is None else strict):
            raise GeneSetQueryError(result)
        return result

    def _readable(
        self, result: PathwayQueryResult, good: Sequence[tuple[int, ResolvedGeneSet]]
    ) -> None:
        """Percentile and z of each scored set against the reference's scores of that set."""
        knn = self.predictors.get(DEFAULT_METHOD)
        if not isinstance(knn, SoftKnn):
            return
        cols = [i for i, _ in good]
        pct, z = percentile_and_z(
            result.scores[:, cols], [knn.reference_scores(r) for _, r in good]
        )
        result.percentiles = np.full(result.scores.shape, np.nan, dtype=np.float32)
        result.zscores = np.full(result.scores.shape, np.nan, dtype=np.float32)
        result.percentiles[:, cols] = pct
        result.zscores[:, cols] = z

    def warm(self, gene_sets: Mapping[str, str] | Sequence[str] = ()) -> None:
        """Pre-compute reference scores for sets expected soon (e.g. a site's own panel)."""
        knn = self.predictors.get(SoftKnn.method)
        if isinstance(knn, SoftKnn):
            for q in gene_sets:
                r = self.resolve(q)
                if not isinstance(r, GeneSetFailure):
                    knn.reference_scores(r)


def _name_of(query: str, collection: GeneSetCollection) -> str:
    q = query.strip()
    if q.startswith("{"):
        import json

        try:
            obj = json.loads(q)
            if isinstance(obj, dict) and isinstance(obj.get("name"), str):
                return str(obj["name"])
        except ValueError:
            pass
        return "invalid"
    return q[:100] or "empty"


def _coverage_of_failure(query: str, engine: PathwayEngine) -> Coverage | None:
    """Coverage is still meaningful for a set that parsed but matched too few genes."""
    try:
        gs = parse_query(query, engine.collection)
    except HistopromptError:
        return None
    return engine.reference.gene_index.coverage(gs)
