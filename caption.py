"""Caption motion files with a trained Motion2Text run.

    python caption.py --run results/synthetic results/synthetic/data/test.pkl
    python caption.py --run results/synthetic clip.npy other.npy --json
    python caption.py --ckpt results/boxing/checkpoints/best.pt ../shared/data/BX/BX_test.pkl \\
        --video_name 4_back_3 --standard ../shared/data/BX/BX_standard.pkl --num_beams 4

Inputs: motion ``.npy`` files ([T, 22, 3] or [T, 66]; HumanML3D's new_joints/*.npy are
[T, 22, 3]), dataset pickles (all clips, or those named by --video_name) and HybrIK's saved
results (res.pk; see python -m dataloaders.hybrik --help), converted to the axes and units of
the run's training data (--hybrik_frame). Features are built
exactly as in training (the run's normalisation and segment). A model with the reference branch
compares each clip with its standard (--standard); without one, the clip's first frame repeated
stands in, as in pretraining.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

EPILOG = """\
standards (models trained with model.reference=subtract):
  --standard STD.npy              one standard for every clip
  --standard STD.pkl --motion_type Jab   that standard of the pickle for every clip
  --standard STD.pkl              each dataset clip's own motion_type picks its standard

output: one line per text, "video_name<TAB>text" (--json: {"video_name": [texts]}).
exit status: 0 on success, 2 on unreadable or malformed inputs (a clip shorter than the encoder's
temporal kernel included, as in training) and conflicting options."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="motion .npy files, dataset .pkl files and/or HybrIK results (res.pk)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run folder results/<experiment> (uses checkpoints/best.pt, else "
                                     "last.pt) or an export folder (python -m models.export)")
    which.add_argument("--ckpt", help="a training checkpoint file")
    p.add_argument("--video_name", action="append", help="caption only this clip of the pickle(s) (repeatable)")
    p.add_argument("--standard", help="standard motion: a standard pickle or a .npy")
    p.add_argument("--motion_type", help="which standard of the --standard pickle to use for every clip")
    p.add_argument("--hybrik_frame", default="auto", choices=("auto", "project", "hybrik"),
                   help="axes and units of HybrIK inputs: project (metres, y up), hybrik (HybrIK's own, "
                        "as BX / FS), auto: those of the run's training data")
    p.add_argument("--segment", default="auto", choices=("auto", "none", "gt", "aligned", "error"),
                   help="crop clips as in training (auto: the run's data.segment where the fields exist)")
    p.add_argument("--num_beams", type=int, default=1, help="beam search width (default 1: greedy)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy/beam search")
    p.add_argument("--temperature", type=float, help="sampling temperature (with --sample)")
    p.add_argument("--top_p", type=float, help="nucleus sampling mass (with --sample)")
    p.add_argument("--num_return_sequences", type=int, default=1, help="texts per clip")
    p.add_argument("--max_new_tokens", type=int, default=64, help="longest text, in tokens")
    p.add_argument("--rerank", type=int, metavar="N",
                   help="for a run trained with retrieval: N beam candidates, the one closest (CIDEr-D) "
                        "to the retrieved training texts is the caption (default: the run's eval.rerank)")
    p.add_argument("--batch_size", type=int, default=16, help="clips per forward pass")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help='print {"video_name": [texts]} as JSON')
    p.add_argument("--pictures", metavar="DIR",
                   help="also write skeleton, node-attention and cross-attention pictures per clip "
                        "(greedy or --num_beams captions; see python -m inference.pictures --help)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, list[str]]:
    """Read the inputs, caption them, print the captions, then (--pictures) draw them."""
    from inference import decode, inputs

    gen = decode.generation_kwargs(args.num_beams, args.sample, args.temperature, args.top_p,
                                args.num_return_sequences, args.max_new_tokens)
    if args.motion_type and not args.standard:
        raise inputs.UsageError("--motion_type picks a standard of --standard FILE; give --standard too")
    if args.batch_size < 1:
        raise inputs.UsageError(f"--batch_size must be >= 1, got {args.batch_size}")
    model, cfg, ckpt_path = decode.load_model(args.run, args.ckpt, args.device)
    frame = (lambda: inputs.data_frame(cfg, ckpt_path)) if args.hybrik_frame == "auto" else args.hybrik_frame
    records = inputs.records_from_inputs(args.inputs, args.video_name, hybrik_frame=frame)
    standards = read_standards_for(model, args, frame)
    if standards:
        records = inputs.pair_with_standards(records, standards,
                                           inputs.standard_for_every_clip(args.standard, args.motion_type))
    captions = decode.caption_records(model, cfg, records, standards, batch_size=args.batch_size,
                                   segment=args.segment, seed=args.seed,
                                   progress=len(records) > args.batch_size,
                                   source=", ".join(map(str, args.inputs)),
                                   rerank=cfg.eval.rerank if args.rerank is None else args.rerank, **gen)
    print_captions(captions, args.json)
    if args.pictures:
        from inference import pictures
        pictures.pictures_for_records(model, cfg, records, standards, args.pictures,
                                      segment=args.segment, num_beams=args.num_beams,
                                      max_new_tokens=args.max_new_tokens)
    return captions


def read_standards_for(model, args: argparse.Namespace, hybrik_frame="project"):
    """The standards the model's reference branch will use, with a note when there are none."""
    from inference import inputs

    if model.reference != "subtract":
        if args.standard:
            print("note: this model has no reference branch; --standard is ignored", file=sys.stderr)
        return None
    if not args.standard:
        print("note: no --standard given: the first frame of each clip repeated stands in for the "
              "standard (as in pretraining)", file=sys.stderr)
        return None
    return inputs.read_standards(args.standard, args.motion_type, hybrik_frame)


def print_captions(captions: dict[str, list[str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(captions, indent=1, ensure_ascii=False), flush=True)
        return
    for name, texts in captions.items():
        for text in texts:
            print(f"{name}\t{text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from dataloaders.records import DataError
    from dataloaders.safe_pickle import UnsafePickleError
    from inference.inputs import UsageError
    from core.io import CheckpointError

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="note: %(message)s", stream=sys.stderr)
    try:
        run(args)
    except (DataError, UnsafePickleError, UsageError, CheckpointError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"caption.py: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
