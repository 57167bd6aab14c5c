"""`histoprompt-export`: model-repository generator, demo bundle, encoder export, TensorRT.

Heavy imports (torch, timm, onnx) happen inside the commands, so `--help` is instant.
The prompting part's `reference` and `evaluate` command groups are registered when their
modules are installed.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import typer

from histoprompt.core.modelspec import MAX_TILE_BATCH
from histoprompt.export.cli_errors import exit_on_error
from histoprompt.export.model_repo import Flavor, TileEncoderPlatform

app = typer.Typer(
    name="histoprompt-export",
    help="Encoders, alignment training, ONNX/TensorRT export and the Triton model repository.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _register_optional_groups() -> None:
    for module, name in (
        ("histoprompt.export.reference_cli", "reference"),
        ("histoprompt.export.evaluation_report", "evaluate"),
        ("histoprompt.export.finetune", "finetune"),
    ):
        try:
            sub = importlib.import_module(module)
        except ImportError:
            continue
        sub_app = getattr(sub, "app", None)
        if isinstance(sub_app, typer.Typer):
            app.add_typer(sub_app, name=name)


LICENCE_HELP = (
    "COMPONENT=LICENCE as you accepted it, e.g. uni=CC-BY-NC-ND-4.0 (repeatable; recorded in "
    "the model card, not checked)"
)


def _licences(items: list[str] | None) -> dict[str, str]:
    from histoprompt.export.errors import ExportError
    from histoprompt.export.model_card import parse_licences

    try:
        return parse_licences(items or [])
    except ExportError as err:
        raise typer.BadParameter(str(err), param_hint="--licence") from err


@app.command("model-card")
def model_card(
    where: Annotated[
        str,
        typer.Argument(help="bundle folder, model repository or model_card.json; local or s3://"),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
) -> None:
    """Show the model card of a bundle or served model repository.

    Example: histoprompt-export model-card s3://histoprompt-models/model_repository
    """
    from histoprompt.export.errors import ExportError
    from histoprompt.export.model_card import read_card, render_card

    with exit_on_error(ExportError, ValueError):
        card = read_card(where)
    typer.echo(card.model_dump_json(indent=1) if as_json else render_card(card))


@app.command("model-repo")
def model_repo(
    out: Annotated[Path, typer.Option(help="repository folder to write")] = Path(
        "model_repository"
    ),
    flavor: Annotated[Flavor, typer.Option(help="cpu: python+onnxruntime; gpu: TensorRT")] = (
        Flavor.cpu
    ),
    artifacts: Annotated[
        Path | None,
        typer.Option(help="bundle folder: use its model card and install its artifacts"),
    ] = None,
    tile_platform: Annotated[
        TileEncoderPlatform, typer.Option(help="gpu flavour tile_encoder platform")
    ] = TileEncoderPlatform.tensorrt,
    reference_uri: Annotated[
        str, typer.Option(help="pathway_query reference DB (path or s3://); default: bundled")
    ] = "",
) -> None:
    """Write config.pbtxt + model.py for every model (demo card unless --artifacts).

    Example: histoprompt-export model-repo --flavor cpu --out model_repository/
    """
    from histoprompt.export.bundle import demo_card, demo_config, write_model_repository
    from histoprompt.export.model_repo import render, write_repository

    if artifacts is not None:
        write_model_repository(artifacts, out, flavor, tile_platform, reference_uri)
        typer.echo(f"wrote {flavor.value} repository with artifacts from {artifacts} to {out}")
        return
    card = demo_card(demo_config())
    written = write_repository(render(card, flavor, tile_platform, reference_uri), out)
    typer.echo(f"wrote {len(written)} files ({flavor.value}, {card.version}) to {out}")


@app.command("demo-bundle")
def demo_bundle(
    out: Annotated[Path, typer.Option(help="output folder (bundle/ and model_repository/)")],
    seed: int = 0,
    repo: Annotated[Path | None, typer.Option(help="write the repository here instead")] = None,
    flavor: Flavor = Flavor.cpu,
    cache_dir: Annotated[Path | None, typer.Option(envvar="HISTOPROMPT_CACHE_DIR")] = None,
    encoder: Annotated[str, typer.Option(help="tiny (demo) or null (data-path bench)")] = "tiny",
    licence: Annotated[list[str] | None, typer.Option(help=LICENCE_HELP)] = None,
) -> None:
    """Train (or reuse) the SYNTHETIC demo alignment and write a served-ready repository.

    Example: histoprompt-export demo-bundle --out .demo
    """
    from histoprompt.export.bundle import build_demo_bundle

    result = build_demo_bundle(
        out,
        seed,
        flavor=flavor,
        cache_dir=cache_dir,
        repo_dir=repo,
        progress=True,
        encoder=encoder,
        licences=_licences(licence),
    )
    val, base = result.metrics["val"], result.metrics["val_unaligned"]
    typer.echo(
        f"{result.card.version} (SYNTHETIC cohort, UNTRAINED {encoder} encoder): held-out "
        f"Recall@5 {val['recall@5']:.3f} vs chance {val['chance@5']:.3f} vs unaligned "
        f"{base['recall@5']:.3f}; repository {result.model_repository}"
    )


def _arch_kwargs(text: str | None) -> dict[str, object] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"not JSON: {err}", param_hint="--arch-kwargs") from err
    if not isinstance(value, dict):
        raise typer.BadParameter("a JSON object of timm arguments", param_hint="--arch-kwargs")
    return value


@app.command("export-encoder")
def export_encoder(
    out: Annotated[Path, typer.Option(help="ONNX file to write")],
    encoder: Annotated[
        str | None, typer.Argument(help="registered encoder name (or use --arch)")
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="timm:<model name>, for any other timm ViT")
    ] = None,
    arch_kwargs: Annotated[
        str | None,
        typer.Option(help="JSON timm arguments for --arch, e.g. '{\"num_classes\": 0}'"),
    ] = None,
    weights: Annotated[str | None, typer.Option(help="local file or s3:// URI")] = None,
    allow_random: Annotated[
        bool, typer.Option(help="export an untrained network (benchmarks)")
    ] = False,
) -> None:
    """Export a tile encoder to ONNX and check parity (parity JSON next to the file).

    The weights load strictly in the published layout; a wrong file fails with one line that
    says which published checkpoint it looks like.

    Example: histoprompt-export export-encoder uni --weights weights/pytorch_model.bin
    --out uni.onnx; any timm ViT: histoprompt-export export-encoder --arch
    timm:vit_base_patch16_224 --arch-kwargs '{"num_classes": 0}' --weights model.safetensors
    --out vit.onnx
    """
    from histoprompt.core.settings import ConnectionSettings
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.onnx_export import export_tile_encoder, write_parity

    if (encoder is None) == (arch is None):
        raise typer.BadParameter("give an encoder name or --arch timm:<model>, not both")
    name = encoder if encoder is not None else str(arch)
    with exit_on_error():
        loaded = load_encoder(
            name,
            weights,
            allow_random=allow_random,
            settings=ConnectionSettings.load(),
            arch_kwargs=_arch_kwargs(arch_kwargs),
        )
    record = export_tile_encoder(loaded.module, loaded.spec.input_px, out)
    write_parity([record], out.with_suffix(".parity.json"))
    typer.echo(json.dumps(record.model_dump()))


@app.command("encoders")
def encoders() -> None:
    """List the registered encoders, their preprocessing and where to pre-fetch weights.

    Example: histoprompt-export encoders
    """
    from histoprompt.export.encoder_specs import (
        HUB_SOURCES,
        PUBLISHED,
        encoder_names,
        encoder_spec,
    )

    for name in encoder_names():
        spec = encoder_spec(name)
        source = HUB_SOURCES.get(name, "seeded, no weights (UNTRAINED)")
        published = PUBLISHED.get(name)
        if published is not None:
            source = f"{source} {' / '.join(published.files)}"
        typer.echo(
            f"{name:12s} D={spec.embed_dim:<5d} tile={spec.tile_px}px@{spec.target_mpp}um/px "
            f"input={spec.input_px}px mean={spec.mean} std={spec.std}  weights: {source}"
        )
        if published is not None:
            typer.echo(f"{'':12s} {published.architecture}; embedding: {published.output}")
    typer.echo(
        f"{'timm:<model>':12s} any other timm ViT (--arch, --arch-kwargs JSON): input size, "
        "mean and std from timm's config for the model, 0.5 um/px"
    )


@app.command("tensorrt")
def tensorrt(
    onnx_file: Annotated[Path, typer.Argument(help="tile_encoder ONNX file")],
    plan: Annotated[Path, typer.Option(help="engine file to write (model.plan)")],
    input_px: Annotated[int, typer.Option(help="encoder input edge S")],
    max_batch: Annotated[
        int, typer.Option(help="profile max = tile_encoder max_batch_size")
    ] = MAX_TILE_BATCH,
    card: Annotated[
        Path | None,
        typer.Option(help="model_card.json: measure TensorRT vs ONNX parity and record it"),
    ] = None,
) -> None:
    """Build an FP16 TensorRT plan for the gpu flavour (needs a GPU and tensorrt).

    Example: histoprompt-export tensorrt tile_encoder.onnx --plan model.plan --input-px 64
    """
    from histoprompt.core import names
    from histoprompt.export.tensorrt_build import build_engine, run_engine

    build_engine(
        onnx_file,
        plan,
        input_name=names.TENSOR_PIXELS,
        row_shape=(3, input_px, input_px),
        max_batch=max_batch,
    )
    typer.echo(f"wrote {plan}")
    if card is not None:
        from histoprompt.export.model_card import add_parity, tensorrt_parity

        result = tensorrt_parity(
            onnx_file, lambda x: run_engine(plan, x, names.TENSOR_PIXELS), input_px
        )
        add_parity(card, result, plan)
        typer.echo(f"recorded {result.model_dump_json()} in {card}")


@app.command("cohort")
def cohort(
    out: Annotated[Path, typer.Option(help="folder for slides/, expression.parquet, cohort.json")],
    patients: int = 8,
    seed: int = 0,
) -> None:
    """Write a SYNTHETIC paired cohort as DICOM-WSI series and an expression parquet.

    Example: histoprompt-export cohort --out .demo/cohort --patients 8
    """
    from histoprompt.export.cohort import CohortConfig, make_cohort
    from histoprompt.export.cohort_files import write_cohort_files
    from histoprompt.export.encoder_specs import encoder_spec

    data = make_cohort(CohortConfig(n_patients=patients, seed=seed))
    files = write_cohort_files(data, out, mpp=float(encoder_spec("tiny").target_mpp))
    typer.echo(f"wrote {len(files.slides)} SYNTHETIC slides and {files.expression} to {out}")


@app.command("train")
def train(
    embeddings: Annotated[Path, typer.Option(help="folder of <slide_id>.npy tile embeddings")],
    slides: Annotated[Path, typer.Option(help="CSV/parquet with slide_id, patient_id")],
    expression: Annotated[Path, typer.Option(help="parquet: patient_id + genes, log1p(TPM)")],
    out: Annotated[Path, typer.Option(help="bundle folder to write")],
    encoder: Annotated[str, typer.Option(help="encoder that made the embeddings")] = "tiny",
    weights: Annotated[str | None, typer.Option(help="its weights (path or s3://)")] = None,
    rna_encoder: Annotated[
        Path | None,
        typer.Option(help="RNA encoder checkpoint folder (BulkFormer), or 'tiny' (UNTRAINED)"),
    ] = None,
    rna_embeddings: Annotated[
        Path | None,
        typer.Option(help="precomputed RNA embeddings table (patient id -> vector) instead"),
    ] = None,
    epochs: int = 80,
    seed: int = 0,
    synthetic: Annotated[bool, typer.Option(help="label the model as SYNTHETIC")] = False,
    licence: Annotated[list[str] | None, typer.Option(help=LICENCE_HELP)] = None,
) -> None:
    """Train the alignment on cached embeddings + expression and export a bundle.

    Example: histoprompt-export train --embeddings emb/ --slides slides.csv
    --expression expr.parquet --out bundle/ --encoder uni --weights s3://models/uni.safetensors
    --rna-encoder weights/bulkformer_147m --licence uni=CC-BY-NC-ND-4.0
    """
    from histoprompt.core.settings import ConnectionSettings
    from histoprompt.export.alignment_training import TrainConfig
    from histoprompt.export.train_from_files import train_from_files

    with exit_on_error():
        card = train_from_files(
            embeddings,
            slides,
            expression,
            out,
            encoder_name=encoder,
            encoder_weights=weights,
            rna_encoder_dir=rna_encoder,
            rna_embeddings=rna_embeddings,
            config=TrainConfig(epochs=epochs, seed=seed),
            synthetic=synthetic,
            settings=ConnectionSettings.load(),
            licences=_licences(licence),
        )
    typer.echo(
        f"wrote bundle {card.version} to {out}; serve it with "
        f"`histoprompt-export model-repo --artifacts {out}`"
    )


def _register_spatial() -> None:
    from histoprompt.export.spatial_cli import spatial_slide, spatial_train_command

    app.command("spatial-slide")(spatial_slide)
    app.command("spatial-train")(spatial_train_command)


_register_spatial()
_register_optional_groups()
