"""A coach's web page over a trained Motion2Text run.

    pip install -r requirements-demo.txt
    python demo.py --run results/synthetic            # then open http://127.0.0.1:7860

Upload a motion (a ``.npy`` of [T, 22, 3] or [T, 66] such as HumanML3D's new_joints, HybrIK's
saved result ``res.pk``, or a dataset pickle) or pick a clip of the run's test split; pick the
standard by motion type or upload one; read the caption (or several: beam search or sampling,
with caption.py's decoding options), watch the learner and the aligned standard side by side, and
see the STA-GCN node attention and T5's cross-attention. A test clip also shows its reference
texts and its metrics. Under the captions the page prints the caption.py command that gives the
same texts.

The page binds to 127.0.0.1 (this machine only) unless --host says otherwise, and never reaches
the internet: Gradio's analytics and version check are switched off, and its fonts are local.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

# Before gradio is imported: no analytics, no version check, nothing from the hub.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

log = logging.getLogger("motion2text.demo")

ELEMENT_IDS = ("source", "motion_file", "test_clip", "standard", "standard_file", "decoding", "num_beams",
               "num_return_sequences", "temperature", "top_p", "max_new_tokens", "seed", "rerank", "caption_button",
               "status", "captions", "command", "references", "animation", "key_frames", "node_attention",
               "cross_attention")
SOURCE_UPLOAD, SOURCE_TEST = "uploaded file", "test clip"
MOTION_TYPES = [".npy", ".pkl", ".pk", ".pickle"]
CSS = """
#status p { margin: 0; }
#status.error, #status .error { color: #b00020; }
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run folder results/<experiment> (checkpoints/best.pt, else last.pt) "
                                     "or an export folder (python -m models.export)")
    which.add_argument("--ckpt", help="a training checkpoint file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p.parse_args(argv)


# ============================================================================ the page ========
BUSY = "Captioning..."


def _status(text: str, error: bool = False, reading: bool = False) -> str:
    if not error:
        return text
    return f"**Could not read the file:** {text}" if reading else f"**Could not caption:** {text}"


def _references_markdown(result: Any, split_metrics: dict[str, float]) -> str:
    if not result.references:
        return "*(an uploaded motion has no reference texts)*"
    lines = ["**Reference texts**", ""] + [f"{i}. {text}" for i, text in enumerate(result.references, 1)]
    if result.metrics:
        names = list(result.metrics)
        lines += ["", "**This clip's metrics** (first caption against its references; CIDEr-D with the test "
                      "split's document frequencies)", "",
                  "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                  "| " + " | ".join(f"{result.metrics[n]:.3f}" for n in names) + " |"]
    if split_metrics:
        shown = {k: v for k, v in split_metrics.items() if k.startswith(("BLEU-4", "METEOR", "ROUGE", "CIDEr"))}
        lines += ["", "The run on the whole test split: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items())]
    return "\n".join(lines)


def build_page(backend: Any):
    """The Gradio page over a :class:`inference.page.DemoRun`."""
    import gradio as gr

    from dataloaders.records import DataError
    from dataloaders.safe_pickle import UnsafePickleError
    from inference import page as db
    from inference.inputs import UsageError

    expected = (DataError, UnsafePickleError, UsageError, FileNotFoundError, ValueError)
    no_pictures = (None, None, None, None)

    def check_motion(path: str | None):
        """On upload: read the file at once and say what it holds (or what is wrong with it)."""
        if not path:
            return gr.update(), ""
        try:
            record, notes = backend.read_motion(path, folder_is_cache=True)
        except expected as exc:
            return gr.update(value=SOURCE_UPLOAD), _status(db.message_of(exc), error=True, reading=True)
        text = f"Read **{record['video_name']}**: {len(record['coordinates'])} frames."
        if backend.standards and not record.get("motion_type"):
            notes.append("It names no motion type: pick its standard below (or upload one).")
        return gr.update(value=SOURCE_UPLOAD), " ".join([text, *notes])

    def check_standard(path: str | None):
        if not path:
            return gr.update(), ""
        try:
            standards = backend.read_standard(path)
        except expected as exc:
            return gr.update(value=db.STANDARD_UPLOAD), _status(db.message_of(exc), error=True, reading=True)
        return (gr.update(value=db.STANDARD_UPLOAD),
                f"Standard read: {', '.join(f'{k} ({len(v)} frames)' for k, v in standards.items())}.")

    def run_caption(source, motion_file, test_clip, standard, standard_file, mode, num_beams, returns,
                    temperature, top_p, max_new_tokens, seed, rerank, progress=gr.Progress()):
        try:
            progress(0.02, desc="reading the motion")
            decoding = db.Decoding(mode=mode, num_beams=int(num_beams), num_return_sequences=int(returns),
                                   temperature=float(temperature), top_p=float(top_p),
                                   max_new_tokens=int(max_new_tokens), seed=int(seed or 0),
                                   rerank=None if rerank is None or int(rerank) == backend.cfg.eval.rerank
                                   else int(rerank))
            if source == SOURCE_TEST:
                if not test_clip:
                    raise UsageError("pick a test clip, or upload a motion")
                record, notes, origin = backend.test_clip(test_clip), [], None
            else:
                if not motion_file:
                    raise UsageError("upload a motion file (.npy, HybrIK's res.pk or a dataset .pkl), "
                                     "or pick a test clip")
                (record, notes), origin = backend.read_motion(motion_file, folder_is_cache=True), motion_file
            result = backend.caption(record, standard=standard, standard_upload=standard_file, decoding=decoding,
                                     source=origin, progress=lambda f, d: progress(f, desc=d))
        except expected as exc:
            return (_status(db.message_of(exc), error=True), "", "", "", *no_pictures)
        except Exception as exc:  # noqa: BLE001 - the page must keep serving; the log keeps the traceback
            log.exception("captioning failed")
            return (_status(f"internal error ({type(exc).__name__}: {db.message_of(exc)})", error=True),
                    "", "", "", *no_pictures)
        standard_text = f"standard **{result.standard}**" if result.standard else "no standard"
        status = " ".join([f"**{result.name}** ({result.frames} frames, {standard_text}): "
                           f"{len(result.texts)} caption(s) in {result.seconds:.1f} s.", *notes, *result.notes])
        captions = "\n".join(result.texts)
        command = f"Same texts from the command line:\n```\n{result.command}\n```"
        return (status, captions, command, _references_markdown(result, backend.split_metrics),
                str(result.animation), str(result.node_attention), str(result.cross_attention),
                str(result.key_frames))

    with gr.Blocks(title=f"Motion2Text: {backend.name}", analytics_enabled=False) as page:
        gr.Markdown(f"# Motion2Text: {backend.name}\n{backend.describe()}")
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio([SOURCE_UPLOAD, SOURCE_TEST], value=SOURCE_UPLOAD if not backend.clip_names()
                                  else SOURCE_TEST, label="Motion", elem_id="source")
                motion_file = gr.File(label="Motion file: .npy [T, 22, 3] or [T, 66], HybrIK's res.pk, or a "
                                            "dataset .pkl", file_types=MOTION_TYPES, type="filepath",
                                      elem_id="motion_file")
                names = backend.clip_names()
                test_clip = gr.Dropdown(names, value=names[0] if names else None, label="Test clip",
                                        elem_id="test_clip", interactive=bool(names))
                standard = gr.Dropdown(backend.standard_choices(), value=db.STANDARD_OWN, label="Standard",
                                       elem_id="standard")
                standard_file = gr.File(label="Standard file (.npy, HybrIK's res.pk or a standard .pkl)",
                                        file_types=MOTION_TYPES, type="filepath", elem_id="standard_file")
                with gr.Accordion("Decoding", open=False):
                    mode = gr.Radio(list(db.DECODING_MODES), value="greedy", label="Method", elem_id="decoding")
                    num_beams = gr.Slider(1, 8, value=3, step=1, label="Beam width (beam search)",
                                          elem_id="num_beams")
                    returns = gr.Slider(1, 5, value=1, step=1, label="Captions per motion",
                                        elem_id="num_return_sequences")
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature (sampling)",
                                            elem_id="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (sampling)", elem_id="top_p")
                    max_new_tokens = gr.Slider(4, 128, value=64, step=1, label="Longest caption (tokens)",
                                               elem_id="max_new_tokens")
                    seed = gr.Number(0, precision=0, label="Seed (sampling)", elem_id="seed")
                    rerank = gr.Number(backend.cfg.eval.rerank, precision=0, minimum=0, visible=backend.retrieves,
                                       label="Rerank this many beam candidates against retrieved texts (0: off)",
                                       elem_id="rerank")
                button = gr.Button("Caption", variant="primary", elem_id="caption_button")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                captions = gr.Textbox(label="Caption(s)", lines=3, interactive=False, elem_id="captions")
                command = gr.Markdown("", elem_id="command")
                references = gr.Markdown("", elem_id="references")
        animation = gr.Image(label="Learner and aligned standard (front and side views)", type="filepath",
                             format="gif", interactive=False, elem_id="animation")
        with gr.Row():
            node = gr.Image(label="STA-GCN node attention (joints by frames)", type="filepath", format="png",
                            interactive=False, elem_id="node_attention")
            cross = gr.Image(label="T5 cross-attention (caption words by motion tokens)", type="filepath",
                             format="png", interactive=False, elem_id="cross_attention")
        key_frames = gr.Image(label="Key frames", type="filepath", format="png", interactive=False,
                              elem_id="key_frames")

        motion_file.upload(check_motion, motion_file, [source, status])
        standard_file.upload(check_standard, standard_file, [standard, status])
        test_clip.select(lambda: SOURCE_TEST, None, source)
        outputs = [status, captions, command, references, animation, node, cross, key_frames]
        button.click(lambda: (BUSY, "", "", "", *no_pictures), None, outputs, queue=False).then(
            run_caption, [source, motion_file, test_clip, standard, standard_file, mode, num_beams, returns,
                          temperature, top_p, max_new_tokens, seed, rerank], outputs)
    return page


# ============================================================================ main ============
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup requests to the page
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("demo.py: error: the page needs gradio: pip install -r requirements-demo.txt", file=sys.stderr)
        return 2
    from dataloaders.records import DataError
    from dataloaders.safe_pickle import UnsafePickleError
    from inference.page import DemoRun, message_of
    from inference.inputs import UsageError
    from core.io import CheckpointError

    try:
        backend = DemoRun(run=args.run, ckpt=args.ckpt, device=args.device)
    except (DataError, UnsafePickleError, UsageError, CheckpointError, FileNotFoundError) as exc:
        print(f"demo.py: error: {message_of(exc)}", file=sys.stderr)
        return 2
    page = build_page(backend)
    print(f"Motion2Text page for {backend.name}: http://{args.host}:{args.port}", flush=True)
    try:
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, ssr_mode=False,
            mcp_server=False, show_error=True, allowed_paths=[str(backend.work)], css=CSS, quiet=False)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
