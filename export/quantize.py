"""A merged LLaVA checkpoint → the appliance's bundle: quantized GGUF + ONNX vision tower + manifest.

    python -m export.quantize --bits 4 --model runs/rt-merged --out bundles/rt-q4

``--bits`` 4, 5, 8, 16 (or 32) give Q4_K_M, Q5_K_M, Q8_0, F16 (F32). The text
model is written as an F32 GGUF (F16 for ``--bits 16``) and quantized by
llama.cpp's own quantizer; the vision tower + projector go to ONNX and are
checked against torch on random images. The bundle is assembled in a hidden
directory beside ``--out`` and renamed into place when complete, so a crash
never leaves a half-written bundle where the appliance would look.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path

import yaml

from appliance.bundle import (
    MANIFEST_FILE,
    ONLY_LEAD,
    PATCH_COLOUR,
    PATCH_PART_GRASP,
    PATCH_PARTS,
    SCHEMA_VERSION,
    TARGET_POSES,
    USE_LEAD,
    AnswerSpec,
    ImageSpec,
    Manifest,
    PresenceSpec,
    TargetCheckSpec,
    file_entry,
    manifest_to_yaml,
)

from .gguf import ExportError, checkpoint_dtypes, text_config, tokenizer_family, write_gguf
from .speech import DRAFTS_FILE, SPEECH_FILE, categories, write_drafts, write_vocabulary

log = logging.getLogger(__name__)

QUANTS = {  # --bits -> (manifest quant type, llama.cpp ftype, file suffix)
    4: ("Q4_K_M", 15, "q4_k_m"),
    5: ("Q5_K_M", 17, "q5_k_m"),
    8: ("Q8_0", 7, "q8_0"),
    16: ("F16", 1, "f16"),
    32: ("F32", 0, "f32"),
}
RESAMPLE = {2: "bilinear", 3: "bicubic"}
MIN_PATCHES = 0.5
"""The presence check's default threshold: chosen on validation scenes (bench/results/presence)."""
REACH = TargetCheckSpec.reach
"""The target check's default reach (``appliance.bundle.TargetCheckSpec``)."""
KNOWLEDGE_FILE = "knowledge.yaml"
KNOWLEDGE_HEADER = (
    "# What the hints say each use is for (appliance/hints.py): the words that point to a use, the objects that\n"
    "# serve it; names: what names an object (an instruction that names one gets no hint for another; add yours).\n"
    "# After an edit, put the file's new sha256sum and size under files: in manifest.yaml.\n"
)
FOLLOWUP_TEMPLATE = " USER: {instruction} ASSISTANT:"
"""A refinement turn as training.data lays it out after an answer's ``</s>``."""


def quantize_gguf(source: Path, out: Path, ftype: int, threads: int = 0) -> Path:
    """llama.cpp's quantizer: an F32/F16 GGUF → ``ftype`` (Q4_K_M = 15, ...)."""
    import llama_cpp

    from appliance.runtime.llm import quiet_llama

    quiet_llama(llama_cpp)  # the quantizer's per-tensor lines go to debug logging
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0:
        raise ExportError(f"llama.cpp failed to quantize {source} (status {status})")
    return out


def image_spec(model_dir: Path, view) -> ImageSpec:
    """The preprocessing recorded in the checkpoint's processor config and its view.json."""
    config = _processor_config(model_dir)
    size = config.get("crop_size", {}).get("height") if config.get("do_center_crop", True) else None
    resize = config.get("size", {}).get("shortest_edge") or config.get("size", {}).get("height")
    size = size or resize
    if size is None:
        raise ExportError(f"{model_dir}: the image processor config gives no input size")
    if config.get("resample", 3) not in RESAMPLE:
        raise ExportError(f"{model_dir}: image resample mode {config.get('resample')} is not supported")
    if view.size != size:
        raise ExportError(f"{model_dir}: view.json says {view.size} px, the processor {size} px")
    return ImageSpec(
        size=size,
        resize=resize,
        mean=tuple(config["image_mean"]),
        std=tuple(config["image_std"]),
        rescale=config.get("rescale_factor", 1 / 255),
        resample=RESAMPLE[config.get("resample", 3)],
        crop=view.crop,
    )


def _processor_config(model_dir: Path) -> dict:
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            data = json.loads(path.read_text())
            return data.get("image_processor", data)
    raise ExportError(f"{model_dir} has no processor_config.json / preprocessor_config.json")


def check_model_dir(model_dir: Path) -> dict:
    """Fail early, with a clear message, on anything that is not an exportable merged LLaVA."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a directory")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face checkpoint directory (no config.json)")
    if (model_dir / "adapter_config.json").is_file():
        raise ExportError(f"{model_dir} is a LoRA adapter: merge it first (python -m training.merge)")
    config = json.loads(config_path.read_text())
    text_config(config)  # the architecture check
    return config


def answer_leads(classes) -> tuple[dict[str, str], dict[str, str]]:
    """The target check's ``leads`` (per spatial relation, the sentence an RT answer about the object leading it
    opens with, as the training data writes it; under ``use``, the words before the use in the sentence an answer
    to a request by use opens with: "{A_name} is"; under ``only``, the first sentence of a reasoning frame that names
    the object and nothing else: "The image shows {a_name}.") and ``a_names`` (each category of ``classes`` with its
    article)."""
    from training.reasoning import load_templates
    from training.reasoning.referring import RELATIONS, load_referring, resolution

    templates = load_templates()
    leads = {r: resolution("spatial", "{a_name}", {"relation": r}) for r in RELATIONS}
    by_use = re.split(r"\{[Tt]hing\}", load_referring().resolution["function"])[0].strip()
    if by_use.count("{A_name}") == 1 and "{" not in by_use.replace("{A_name}", ""):
        leads[USE_LEAD] = by_use  # else (a template that does not open with the object) no lead for uses
    # the first reasoning frame whose first sentence names the object and nothing else ("The image shows {a_name}.")
    for frame in templates.reasoning:
        first = re.split(r"(?<=\.) ", frame, maxsplit=1)[0]
        if first.endswith(".") and re.findall(r"\{(\w+)\}", first) == ["a_name"]:
            leads[ONLY_LEAD] = first
            break
    known = {**templates.categories, templates.fallback.name: templates.fallback}
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise ExportError(f"the heads' categories {', '.join(unknown)} are no template category (no article known)")
    return leads, {c: known[c].a_name for c in classes}


def build_bundle(
    model_dir: Path,
    out: Path,
    bits: int = 4,
    vision_precision: str = "fp32",
    force: bool = False,
    progress: bool = True,
    heads: Path | None = None,
    min_patches: float = MIN_PATCHES,
    target_check: bool = False,
    reach: int = REACH,
    target_pose: str = "model",
    spatial: bool = True,
    parts: Path | None = None,
) -> Manifest:
    """Export, quantize, check and write the bundle; returns its manifest. With ``heads`` (the vision stage's
    checkpoint the model was built on), the vision graph also says which categories the image shows and the
    manifest gets a ``presence`` section (``appliance.runtime.presence``); with ``target_check`` too, the graph
    gives the heads' patch maps and the manifest a ``target_check`` section (``appliance.runtime.target``) whose
    ``pose`` is ``target_pose`` and, unless ``spatial`` is False, whose ``leads`` resolve spatial instructions in the
    heads' instances and open answers to requests by use with the one object hinted, and to requests that name
    nothing with the one object seen (``answer_leads``). With ``parts`` (``training.parts``'s output for that
    checkpoint), the graph gives the part head's map too and the section's part check moves part follow-ups onto the
    part named. Where the heads have a colour head, the graph gives its map and the section's colour words: a first
    instruction that tells two of a category apart by colour gets the heads' grasp on the instance it asks for."""
    from training.model import load_llava
    from training.progress import progress_bar
    from training.tokenizer import IMAGE
    from training.view import ModelView

    from .vision import (
        colour_parity,
        export_onnx,
        has_colour,
        maps_parity,
        parity,
        part_maps,
        parts_parity,
        presence_head,
        presence_parity,
    )

    if bits not in QUANTS:
        raise ExportError(f"--bits must be one of {sorted(QUANTS)}, got {bits}")
    model_dir, out = Path(model_dir), Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} exists (use --force to replace it)")
    config = check_model_dir(model_dir)
    view = ModelView.load(model_dir)
    spec = image_spec(model_dir, view)
    quant, ftype, suffix = QUANTS[bits]
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    steps = progress_bar(total=4, desc="bundle", unit="step", disable=not progress)
    started = time.monotonic()

    steps.set_postfix_str("vision tower → ONNX")
    if target_check and heads is None:
        raise ExportError("the target check needs --heads: the vision stage's checkpoint")
    if heads is not None and not view.refusals:
        raise ExportError(f"--heads: {model_dir} was not trained to refuse (view.json), so no refusal can be written")
    if parts is not None and not target_check:
        raise ExportError("--parts needs --target-check: the part check is part of the target check")
    model, _ = load_llava(model_dir)
    head = presence_head(heads, model) if heads is not None else None
    part_head = part_maps(parts, heads) if parts is not None else None
    vision = export_onnx(
        model, work / "vision.onnx", vision_precision, presence=head, maps=target_check, parts=part_head
    )
    vision_error = parity(model, vision)
    metrics = {"vision_relative_error": vision_error}
    presence = None
    if head is not None:
        metrics["presence_max_error_patches"] = presence_parity(model, vision, head)
        presence = PresenceSpec(head.classes, min_patches, source=str(Path(heads).resolve()))
    target = None
    if target_check:
        metrics["target_check_max_error"] = maps_parity(model, vision, head)
        grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
        leads, a_names = answer_leads(head.classes) if spatial else ({}, {})
        part_fields = {}
        if part_head is not None:
            from training.parts import category_parts

            metrics["parts_max_error"] = parts_parity(model, vision, head, part_head)
            known = category_parts()
            part_fields = {
                "parts": PATCH_PARTS,
                "part_classes": tuple(part_head.classes),
                "category_parts": {c: tuple(known[c]) for c in head.classes if len(known.get(c, ())) > 1},
                "part_grasp": PATCH_PART_GRASP if part_head.place_weight is not None else "",
            }
        if has_colour(head):
            from training.stages import COLOURS

            metrics["colour_max_error"] = colour_parity(model, vision, head)
            part_fields.update(colour=PATCH_COLOUR, colours=tuple(COLOURS))
        target = TargetCheckSpec(
            grid, reach, source=str(Path(heads).resolve()), pose=target_pose, leads=leads, a_names=a_names,
            **part_fields,
        )  # fmt: skip
    n_image_tokens, width = _embedding_shape(vision, spec.size)
    del model
    steps.update()

    steps.set_postfix_str("text model → GGUF")
    llm = work / f"llm-{suffix}.gguf"
    if bits in (16, 32):
        write_gguf(model_dir, llm, "f16" if bits == 16 else "f32")
    else:
        # the quantizer's source: F32 for float32 weights; F16 for 16-bit ones (bfloat16 and float16 values fit
        # F16 exactly in the range weights have, and a 7B model's F32 file would be 28 GB)
        wide = checkpoint_dtypes(model_dir) - {"BF16", "F16"}
        source_dtype = "f32" if wide else "f16"
        source = write_gguf(model_dir, work / f"llm-{source_dtype}.gguf.src", source_dtype)
        steps.update()
        steps.set_postfix_str(f"quantize → {quant}")
        quantize_gguf(source, llm, ftype)
        source.unlink()
    steps.n = 3
    steps.set_postfix_str("manifest")
    speech = write_vocabulary(work / SPEECH_FILE)
    drafts = write_drafts(work / DRAFTS_FILE)
    knowledge = None
    if view.knowledge is not None:  # the hints the model was trained with, in the file a user may extend
        knowledge = work / KNOWLEDGE_FILE
        knowledge.write_text(KNOWLEDGE_HEADER + yaml.safe_dump(view.knowledge, sort_keys=False, allow_unicode=True))
    manifest = Manifest(
        schema=SCHEMA_VERSION,
        model=out.name,
        source=str(model_dir.resolve()),
        quant=quant,
        llm=llm.name,
        vision=vision.name,
        vision_precision=vision_precision,
        image=spec,
        n_image_tokens=n_image_tokens,
        embedding_width=width,
        prompt_template=view.prompt_template,
        image_token=IMAGE,
        followup_template=FOLLOWUP_TEMPLATE,
        answer=AnswerSpec(view.variant, view.decimals, view.refusals),
        files={p.name: file_entry(p) for p in (llm, vision, speech, drafts, knowledge) if p is not None},
        tokenizer=tokenizer_family(json.loads((model_dir / "tokenizer.json").read_text())),
        speech=speech.name,
        drafts=drafts.name,
        knowledge=None if knowledge is None else knowledge.name,
        categories=categories(),
        presence=presence,
        target_check=target,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        metrics={**metrics, "export_seconds": round(time.monotonic() - started, 1)},
    )
    if width != config.get("text_config", {}).get("hidden_size", width):
        raise ExportError(f"projector output width {width} differs from the text model's hidden size")
    (work / MANIFEST_FILE).write_text(manifest_to_yaml(manifest))
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    steps.update()
    steps.close()
    return manifest


def _embedding_shape(onnx_path: Path, size: int) -> tuple[int, int]:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = session.run(None, {"pixel_values": np.zeros((1, 3, size, size), np.float32)})[0].shape
    return int(shape[1]), int(shape[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.quantize",
        description="Build the appliance bundle from a merged LLaVA checkpoint: the text model quantized to GGUF "
        "(4 = Q4_K_M, 5 = Q5_K_M, 8 = Q8_0, 16 = F16, 32 = F32), the vision tower + projector as ONNX, and "
        "manifest.yaml with hashes, preprocessing, prompt template and answer contract.",
        epilog="example: python -m export.quantize --bits 4 --model runs/rt-merged --out bundles/rt-q4",
    )
    parser.add_argument("--bits", type=int, choices=sorted(QUANTS), default=4)
    parser.add_argument("--model", type=Path, required=True, help="merged HF LLaVA checkpoint (with view.json)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument(
        "--vision-precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp32 (reference), fp16 (GPU), int8 (CPU, dynamic quantisation)",
    )
    parser.add_argument(
        "--heads",
        type=Path,
        help="the vision stage's checkpoint the model was built on: its identity head goes into the vision graph, "
        "and the appliance refuses an instruction naming a category no image patch shows (the presence check)",
    )
    parser.add_argument(
        "--min-patches",
        type=float,
        help="with --heads: the expected patches a named category needs to count as on the table (default 0.5, "
        "chosen on validation scenes)",
    )
    parser.add_argument(
        "--target-check",
        action="store_true",
        help="with --heads: the vision graph also gives the heads' patch maps, and the appliance moves a first pose "
        "that lies off the object its reasoning named onto the heads' best grasp of that object",
    )
    parser.add_argument(
        "--reach",
        type=int,
        help=f"with --target-check: patches around a pose on the table that may show the object (default {REACH})",
    )
    parser.add_argument(
        "--target-pose",
        choices=TARGET_POSES,
        help="with --target-check: on the object the reasoning named, keep the model's pose (model, the default) or "
        "take the heads' best grasp on that object (heads)",
    )
    parser.add_argument(
        "--no-spatial",
        action="store_true",
        help="with --target-check: leave spatial instructions ('the mug on the left'), requests by use and those "
        "that name nothing to the "
        "model; by default the appliance finds the object leading the relation in the heads' instances and the "
        "answer opens by naming it, an answer to a request by use whose hint names one object the heads see "
        "opens with that object ('A pair of scissors is ...'), and one to a request that names nothing, where the "
        "heads see one object only, with it ('The image shows a spatula.')",
    )
    parser.add_argument(
        "--parts",
        type=Path,
        help="with --target-check: the part head trained on the --heads checkpoint (python -m training.parts): "
        "a follow-up asking for another part of the held object gets the heads' best grasp on that part",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    args = parser.parse_args(argv)
    if args.min_patches is not None and args.heads is None:
        parser.error("--min-patches needs --heads")
    if args.target_check and args.heads is None:
        parser.error("--target-check needs --heads")
    if args.reach is not None and not args.target_check:
        parser.error("--reach needs --target-check")
    if args.target_pose is not None and not args.target_check:
        parser.error("--target-pose needs --target-check")
    if args.no_spatial and not args.target_check:
        parser.error("--no-spatial needs --target-check")
    if args.parts is not None and not args.target_check:
        parser.error("--parts needs --target-check")
    if args.reach is not None and args.reach < 0:
        parser.error(f"--reach must be >= 0, got {args.reach}")
    min_patches = MIN_PATCHES if args.min_patches is None else args.min_patches
    if not min_patches >= 0:
        parser.error(f"--min-patches must be >= 0, got {min_patches}")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        manifest = build_bundle(
            args.model,
            args.out,
            args.bits,
            args.vision_precision,
            args.force,
            progress=sys.stderr.isatty(),
            heads=args.heads,
            min_patches=min_patches,
            target_check=args.target_check,
            reach=REACH if args.reach is None else args.reach,
            target_pose=args.target_pose or "model",
            spatial=not args.no_spatial,
            parts=args.parts,
        )
    except (ExportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{name} {entry.bytes / 1e6:.1f} MB" for name, entry in manifest.files.items())
    print(
        f"bundle {args.out}: {manifest.quant}, {sizes}; vision parity {manifest.metrics['vision_relative_error']:.1e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
