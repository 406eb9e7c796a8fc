"""Guo et al.'s text-motion matching evaluator: R-Precision and MM-Dist for motion-to-text.

Published HumanML3D motion-to-text tables (TM2T, MotionGPT and the papers that compare with
them) report R-Precision top-1/2/3 and MM-Dist ("matching score") measured by the text and
motion encoders that Guo et al. trained for text-to-motion generation (the ``text_mot_match``
checkpoint of their release).  This module re-builds those encoders from the published
architecture, loads the released weights strictly, prepares texts and motions as the
published evaluation does, and computes the two figures.  The weights and the vocabulary are
not shipped here: the user brings them (see :func:`find_evaluator_files`).

The architecture (sizes as released for HumanML3D):

* **text encoder**: each token is a 300-d GloVe-based word vector plus a linear map of its
  15-way part-of-speech one-hot (``pos_emb``: 15 -> 300); a linear layer (``input_emb``:
  300 -> 512), a one-layer bidirectional GRU (hidden 512) run over the packed sequence from a
  learned initial state (``hidden``, [2, 1, 512]); the two final states are concatenated and
  mapped by ``output_net`` (Linear 1024 -> 512, LayerNorm, LeakyReLU 0.2, Linear 512 -> 512).
* **movement encoder**: two 1-d convolutions (kernel 4, stride 2, padding 1; 259 -> 512 -> 512
  channels), each followed by dropout 0.2 and LeakyReLU 0.2, then a linear layer (512 -> 512)
  per step; it sees the 263-dim features without the 4 foot contacts and shortens time by 4.
* **motion encoder**: ``input_emb`` (512 -> 1024), a bidirectional GRU (hidden 1024) from a
  learned state (``hidden``, [2, 1, 1024]) over ``length // 4`` steps, ``output_net`` (Linear
  2048 -> 1024, LayerNorm, LeakyReLU 0.2, Linear 1024 -> 512).

The checkpoint is a dict whose ``text_encoder``, ``movement_encoder`` and ``motion_encoder``
entries are these modules' state dicts (other entries, such as the epoch or optimiser states,
are ignored).  It is read with ``torch.load(weights_only=True)`` and every entry must match
key for key and shape for shape: a missing, unexpected or mis-shaped key is named.

Inputs, as the published m2t evaluation prepares them:

* **text**: a list of ``word/POS`` tokens.  A generated caption is first tagged with spaCy as
  HumanML3D's own text processing did (:func:`process_text`: hyphens removed, tokens that are
  not purely alphabetic dropped, nouns and verbs other than "left" replaced by their lemma);
  a reference uses the ``tokens`` field of its ``texts/*.txt`` line as it is.  At most 20 tokens
  are kept, ``sos/OTHER`` and ``eos/OTHER`` are put around them, and ``unk/OTHER`` pads to 22.
  A word in the vocabulary gets its vector and, if it is in one of five lists of important
  words (locations, body parts, objects, actions, manners), that list's tag instead of its
  part of speech; any other word gets the ``unk`` vector and the tag ``OTHER``.
* **motion**: the clip's 263-dim HumanML3D features, normalised with the evaluator's own
  mean and standard deviation (``mean_eval.npy`` / ``std_eval.npy``; not the dataset's
  ``Mean.npy`` / ``Std.npy``), cut to 196 frames, padded with zeros to 196 frames; the
  encoder runs ``length // 4`` steps.

Figures: the clips are put in a random order (a seeded permutation) and cut into groups of
32; an incomplete last group is left out, as there.  In each group the 32 x 32 Euclidean
distances between motion and text embeddings are computed; MM-Dist is the mean distance of
matched pairs, and R-Precision top-k the share of rows whose own partner is among the k
nearest.  TM2T's m2t evaluation ranks, for each motion, the 32 texts (``motion-to-text``, the
default here); MotionGPT's ranks, for each text, the 32 motions (``text-to-motion``).  MM-Dist
is the same either way.  (MotionGPT's code, as read, also divides the motion lengths by 4 twice
before the motion encoder, so its GRU reads a quarter of the steps; that is not reproduced here.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# ------------------------------------------------------------------------------------------
# The published sizes and conventions
# ------------------------------------------------------------------------------------------
WORD_DIM = 300
FEATURE_DIM = 263                 # HumanML3D's motion features
FOOT_CONTACTS = 4                 # the last 4 features; the movement encoder does not see them
TEXT_HIDDEN = 512
MOVEMENT_HIDDEN = 512
MOVEMENT_LATENT = 512
MOTION_HIDDEN = 1024
EMBEDDING_DIM = 512
UNIT_LENGTH = 4                   # the movement encoder shortens time by 4
MAX_TEXT_TOKENS = 20              # tokens kept, before sos/eos are added
MAX_MOTION_FRAMES = 196
MIN_MOTION_FRAMES = 40            # HumanML3D's evaluation keeps 40 <= frames < 200
MAX_MOTION_FRAMES_EXCLUSIVE = 200
GROUP_SIZE = 32
TOP_K = 3
DIRECTIONS = ("motion-to-text", "text-to-motion")

# The part-of-speech one-hot: 9 spaCy tags, five lists of important words, and OTHER.
POS_TAGS = ("VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
            "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER")
POS_INDEX = {tag: i for i, tag in enumerate(POS_TAGS)}
# Checked in this order; a word in one of them gets that tag whatever its part of speech.
IMPORTANT_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Loc_VIP", frozenset("left right clockwise counterclockwise anticlockwise forward back backward "
                          "up down straight curve".split())),
    ("Body_VIP", frozenset("arm chin foot feet face hand mouth leg waist eye knee shoulder thigh".split())),
    ("Obj_VIP", frozenset("stair dumbbell chair window floor car ball handrail baseball basketball".split())),
    ("Act_VIP", frozenset("walk run swing pick bring kick put squat throw hop dance jump turn stumble stop "
                          "sit lift lower raise wash stand kneel stroll rub bend balance flap jog shuffle "
                          "lean rotate spin spread climb".split())),
    ("Desc_VIP", frozenset("slowly carefully fast careful slow quickly happy angry sad happily angrily "
                           "sadly".split())),
)
SOS, EOS, PAD = "sos/OTHER", "eos/OTHER", "unk/OTHER"

VOCABULARY_PREFIX = "our_vab"
VOCABULARY_FILES = tuple(f"{VOCABULARY_PREFIX}_{suffix}" for suffix in ("data.npy", "words.pkl", "idx.pkl"))
CHECKPOINT_PLACES = ("text_mot_match/model/finest.tar", "t2m/text_mot_match/model/finest.tar", "finest.tar")
VOCABULARY_PLACES = ("glove", ".", "..", "../glove")
META_NAMES = (("mean_eval.npy", "std_eval.npy"), ("mean.npy", "std.npy"))
META_PLACES = (".", "meta", "evaluator_meta", "t2m/Comp_v6_KLD01/meta", "t2m/Comp_v6_KLD005/meta",
               "Comp_v6_KLD01/meta", "Comp_v6_KLD005/meta")
ENCODER_NAMES = ("text_encoder", "movement_encoder", "motion_encoder")


class EvaluatorError(ValueError):
    """The evaluator's files are missing, unreadable or do not match; one line, naming the file."""


# ------------------------------------------------------------------------------------------
# Text: spaCy tagging as HumanML3D did, vocabulary look-up
# ------------------------------------------------------------------------------------------
def process_text(nlp: Callable[[str], Any], sentence: str) -> list[str]:
    """``word/POS`` tokens of ``sentence`` as HumanML3D's ``tokens`` field was made.

    ``nlp`` is a loaded spaCy pipeline (anything returning tokens with ``text``, ``pos_`` and
    ``lemma_``).  Hyphens are removed before tagging; a token whose text is not purely
    alphabetic is dropped (punctuation, numbers, "don't"'s pieces with an apostrophe); a NOUN or
    VERB becomes its lemma unless its text is "left"; the case is left as it is.
    """
    tokens = []
    for token in nlp(sentence.strip().replace("-", "")):
        word = token.text
        if not word.isalpha():
            continue
        if token.pos_ in ("NOUN", "VERB") and word != "left":
            word = token.lemma_
        tokens.append(f"{word}/{token.pos_}")
    return tokens


def load_spacy(model: str) -> Callable[[str], Any]:
    """``spacy.load(model)`` (a package name such as ``en_core_web_sm`` or a folder); an
    :class:`EvaluatorError` naming ``--spacy-model`` when spaCy or the model is missing."""
    try:
        import spacy  # type: ignore[import-not-found]
    except ImportError:
        raise EvaluatorError("--spacy-model needs the spaCy package, which is not installed "
                             "(pip install -r requirements-m2t.txt)") from None
    try:
        return spacy.load(model)
    except (OSError, IOError, ValueError, ImportError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvaluatorError(f"--spacy-model {model!r}: spaCy cannot load it ({first[:160]}); give an "
                             "installed pipeline such as en_core_web_sm or its folder") from None


def pad_tokens(tokens: Sequence[str]) -> tuple[list[str], int]:
    """``(22 tokens, length)``: at most 20 tokens between ``sos`` and ``eos``, padded with
    ``unk/OTHER``; the length counts ``sos`` and ``eos``."""
    kept = [SOS, *list(tokens)[:MAX_TEXT_TOKENS], EOS]
    return kept + [PAD] * (MAX_TEXT_TOKENS + 2 - len(kept)), len(kept)


@dataclass
class Vocabulary:
    """The evaluator's word vectors: ``vectors[index[word]]`` for each word in ``words``."""

    vectors: np.ndarray            # (N, 300)
    words: frozenset[str]
    index: Mapping[str, int]

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Vocabulary":
        """Read ``our_vab_data.npy`` (no pickle allowed), ``our_vab_words.pkl`` and
        ``our_vab_idx.pkl`` (with the restricted unpickler) from ``folder``."""
        from dataloaders.safe_pickle import UnsafePickleError, safe_load

        folder = Path(folder)
        data, words_path, index_path = (folder / name for name in VOCABULARY_FILES)
        try:
            vectors = np.load(data, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EvaluatorError(f"{data}: not a readable .npy array of word vectors ({exc})") from None
        loaded = []
        for path in (words_path, index_path):
            try:
                loaded.append(safe_load(path))
            except UnsafePickleError as exc:
                raise EvaluatorError(str(exc)) from None
            except Exception as exc:  # noqa: BLE001 - any unreadable pickle becomes one line
                raise EvaluatorError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
        words, index = loaded
        if vectors.ndim != 2 or vectors.shape[1] != WORD_DIM:
            raise EvaluatorError(f"{data}: expected word vectors of shape [N, {WORD_DIM}], found "
                                 f"{list(vectors.shape)}")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise EvaluatorError(f"{words_path}: expected a list of words")
        if not isinstance(index, dict) or not all(isinstance(i, int) for i in index.values()):
            raise EvaluatorError(f"{index_path}: expected a dict {{word: row}}")
        missing = [w for w in words if w not in index]
        if missing:
            raise EvaluatorError(f"{index_path}: no row for {len(missing)} word(s) of {words_path.name}, "
                                 f"e.g. {missing[:3]}")
        bad = [w for w in words if not 0 <= index[w] < len(vectors)]
        if bad:
            raise EvaluatorError(f"{index_path}: rows outside the {len(vectors)} vectors for {bad[:3]}")
        if "unk" not in set(words):
            raise EvaluatorError(f"{words_path}: the vocabulary has no 'unk' word")
        return cls(np.asarray(vectors, dtype=np.float32), frozenset(words), dict(index))

    def lookup(self, token: str) -> tuple[np.ndarray, int]:
        """``(word vector, tag index)`` of a ``word/POS`` token."""
        word, _, pos = token.partition("/")
        if word not in self.words:
            return self.vectors[self.index["unk"]], POS_INDEX["OTHER"]
        for tag, members in IMPORTANT_WORDS:
            if word in members:
                return self.vectors[self.index[word]], POS_INDEX[tag]
        return self.vectors[self.index[word]], POS_INDEX.get(pos, POS_INDEX["OTHER"])

    def encode(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(word vectors (B, 22, 300), tag one-hots (B, 22, 15), lengths (B,))``."""
        n = len(token_lists)
        vectors = np.zeros((n, MAX_TEXT_TOKENS + 2, WORD_DIM), dtype=np.float32)
        one_hots = np.zeros((n, MAX_TEXT_TOKENS + 2, len(POS_TAGS)), dtype=np.float32)
        lengths = np.zeros(n, dtype=np.int64)
        for i, tokens in enumerate(token_lists):
            padded, lengths[i] = pad_tokens(tokens)
            for t, token in enumerate(padded):
                vectors[i, t], tag = self.lookup(token)
                one_hots[i, t, tag] = 1.0
        return vectors, one_hots, lengths


# ------------------------------------------------------------------------------------------
# Motion: the evaluator's normalisation
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalisation:
    """The evaluator's input statistics (float64 [263] each) and the files they came from."""

    mean: np.ndarray
    std: np.ndarray
    source: str

    @classmethod
    def from_files(cls, mean_path: str | Path, std_path: str | Path) -> "Normalisation":
        arrays = []
        for path in (Path(mean_path), Path(std_path)):
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise EvaluatorError(f"{path}: not a readable .npy array ({exc})") from None
            if array.shape != (FEATURE_DIM,):
                raise EvaluatorError(f"{path}: expected shape [{FEATURE_DIM}], found {list(array.shape)}")
            arrays.append(np.asarray(array, dtype=np.float64))
        if not np.all(arrays[1] > 0):
            raise EvaluatorError(f"{std_path}: standard deviations must be > 0")
        return cls(arrays[0], arrays[1], f"{mean_path}, {std_path}")

    def apply(self, features: np.ndarray) -> np.ndarray:
        """``(features - mean) / std`` for features ``(T, 263)``."""
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.std


def motion_batch(clips: Sequence[np.ndarray], norm: Normalisation) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs (B, 196, 259) float32, encoder steps (B,))`` from clips of features ``(T, 263)``:
    normalised, cut to 196 frames, zero-padded to 196, foot contacts dropped; steps = frames // 4."""
    batch = np.zeros((len(clips), MAX_MOTION_FRAMES, FEATURE_DIM - FOOT_CONTACTS), dtype=np.float32)
    steps = np.zeros(len(clips), dtype=np.int64)
    for i, clip in enumerate(clips):
        if clip.ndim != 2 or clip.shape[1] != FEATURE_DIM:
            raise EvaluatorError(f"motion {i}: expected features [T, {FEATURE_DIM}], found {list(clip.shape)}")
        normalised = norm.apply(clip[:MAX_MOTION_FRAMES])  # (T', 263)
        batch[i, :len(normalised)] = normalised[:, :FEATURE_DIM - FOOT_CONTACTS]
        steps[i] = len(normalised) // UNIT_LENGTH
    if np.any(steps < 1):
        raise EvaluatorError(f"a motion is shorter than {UNIT_LENGTH} frames; the evaluator needs at least one step")
    return batch, steps


# ------------------------------------------------------------------------------------------
# The encoders
# ------------------------------------------------------------------------------------------
def _torch_modules():
    """The three encoder classes (torch is imported only when the evaluator is used)."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence

    def head(hidden: int, out: int) -> nn.Sequential:
        # indices 0, 1, 3 carry weights (2 is the activation), as in the released keys
        return nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2),
                             nn.Linear(hidden, out))

    def last_states(gru: nn.GRU, start: torch.Tensor, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        initial = start.expand(-1, inputs.shape[0], -1).contiguous()  # (2, B, H)
        _, last = gru(packed, initial)                                  # (2, B, H), input order
        return torch.cat([last[0], last[1]], dim=-1)                    # (B, 2H)

    class TextEncoder(nn.Module):
        def __init__(self, word_size: int = WORD_DIM, pos_size: int = len(POS_TAGS),
                     hidden_size: int = TEXT_HIDDEN, output_size: int = EMBEDDING_DIM) -> None:
            super().__init__()
            self.pos_emb = nn.Linear(pos_size, word_size)
            self.input_emb = nn.Linear(word_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
            self.output_net = head(hidden_size, output_size)
            self.hidden = nn.Parameter(torch.zeros(2, 1, hidden_size))

        def forward(self, words: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            inputs = self.input_emb(words + self.pos_emb(tags))  # (B, L, H)
            return self.output_net(last_states(self.gru, self.hidden, inputs, lengths))

    class MovementEncoder(nn.Module):
        def __init__(self, input_size: int = FEATURE_DIM - FOOT_CONTACTS, hidden_size: int = MOVEMENT_HIDDEN,
                     output_size: int = MOVEMENT_LATENT) -> None:
            super().__init__()
            self.main = nn.Sequential(nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
                                      nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2))
            self.out_net = nn.Linear(output_size, output_size)

        def forward(self, motion: torch.Tensor) -> torch.Tensor:
            return self.out_net(self.main(motion.transpose(1, 2)).transpose(1, 2))  # (B, T/4, 512)

    class MotionEncoder(nn.Module):
        def __init__(self, input_size: int = MOVEMENT_LATENT, hidden_size: int = MOTION_HIDDEN,
                     output_size: int = EMBEDDING_DIM) -> None:
            super().__init__()
            self.input_emb = nn.Linear(input_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
            self.output_net = head(hidden_size, output_size)
            self.hidden = nn.Parameter(torch.zeros(2, 1, hidden_size))

        def forward(self, movements: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            return self.output_net(last_states(self.gru, self.hidden, self.input_emb(movements), steps))

    return TextEncoder, MovementEncoder, MotionEncoder


def build_encoders() -> dict[str, Any]:
    """``{"text_encoder", "movement_encoder", "motion_encoder"}`` with the released sizes, in eval mode."""
    text, movement, motion = _torch_modules()
    encoders = {"text_encoder": text(), "movement_encoder": movement(), "motion_encoder": motion()}
    for module in encoders.values():
        module.eval()
    return encoders


def expected_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Key -> shape of each encoder's state dict, as the released checkpoint holds them."""
    return {name: {key: tuple(value.shape) for key, value in module.state_dict().items()}
            for name, module in build_encoders().items()}


def _listed(items: Sequence[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def state_dict_problems(expected: Mapping[str, tuple[int, ...]], state: Any) -> list[str]:
    """What keeps ``state`` from loading strictly: missing keys, unexpected keys, wrong shapes."""
    import torch

    if not isinstance(state, Mapping):
        return [f"expected a state dict, found {type(state).__name__}"]
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(expected[k])})" if isinstance(state[k], torch.Tensor)
             else f"{k} is a {type(state[k]).__name__}, not a tensor"
             for k in expected if k in state and (not isinstance(state[k], torch.Tensor)
                                                  or tuple(state[k].shape) != expected[k])]
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_listed(wrong)}")
    return problems


class Evaluator:
    """The three encoders with the released weights, and the figures they give."""

    def __init__(self, encoders: Mapping[str, Any], device: str = "cpu", epoch: Any = None) -> None:
        self.encoders = {name: module.to(device).eval() for name, module in encoders.items()}
        self.device = device
        self.epoch = epoch

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> "Evaluator":
        """Read ``checkpoint`` with ``weights_only=True`` and load each encoder strictly; an
        :class:`EvaluatorError` names the entry and the keys that do not match."""
        from core.io import CheckpointError, load_checkpoint

        try:
            state = load_checkpoint(checkpoint)
        except CheckpointError as exc:
            raise EvaluatorError(str(exc)) from None
        encoders = build_encoders()
        problems = []
        absent = [name for name in ENCODER_NAMES if name not in state]
        if absent:
            problems.append(f"no {', '.join(absent)} entr{'y' if len(absent) == 1 else 'ies'} (found "
                            f"{', '.join(map(str, state)) or 'nothing'})")
        for name in ENCODER_NAMES:
            if name in state:
                expected = {k: tuple(v.shape) for k, v in encoders[name].state_dict().items()}
                problems += [f"{name}: {p}" for p in state_dict_problems(expected, state[name])]
        if problems:
            raise EvaluatorError(f"{checkpoint}: not the released text-motion matching evaluator: "
                                 + "; ".join(problems))
        for name in ENCODER_NAMES:
            encoders[name].load_state_dict(state[name], strict=True)
        return cls(encoders, device=device, epoch=state.get("epoch"))

    def embed_texts(self, vocabulary: Vocabulary, token_lists: Sequence[Sequence[str]],
                    batch_size: int = 256) -> np.ndarray:
        """Text embeddings ``(B, 512)`` of ``word/POS`` token lists."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(token_lists), batch_size):
                words, tags, lengths = vocabulary.encode(token_lists[start:start + batch_size])
                embedded = self.encoders["text_encoder"](torch.from_numpy(words).to(self.device),
                                                         torch.from_numpy(tags).to(self.device),
                                                         torch.from_numpy(lengths))
                out.append(embedded.cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, EMBEDDING_DIM))

    def embed_motions(self, clips: Sequence[np.ndarray], norm: Normalisation, batch_size: int = 64) -> np.ndarray:
        """Motion embeddings ``(B, 512)`` of clips of 263-dim features ``(T, 263)``."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(clips), batch_size):
                inputs, steps = motion_batch(clips[start:start + batch_size], norm)
                movements = self.encoders["movement_encoder"](torch.from_numpy(inputs).to(self.device))
                embedded = self.encoders["motion_encoder"](movements, torch.from_numpy(steps))
                out.append(embedded.cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, EMBEDDING_DIM))


# ------------------------------------------------------------------------------------------
# Finding the user's files
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluatorFiles:
    checkpoint: Path
    vocabulary: Path                 # the folder holding our_vab_*
    mean: Path
    std: Path


def _first(folder: Path, places: Sequence[str], names: Sequence[str]) -> Path | None:
    for place in places:
        candidate = (folder / place).resolve()
        if all((candidate / name).is_file() for name in names):
            return candidate
    return None


def find_meta(folder: str | Path) -> tuple[Path, Path] | None:
    """``(mean, std)`` of the evaluator's normalisation in ``folder`` or a usual sub-folder."""
    folder = Path(folder)
    for place in META_PLACES:
        for mean_name, std_name in META_NAMES:
            if (folder / place / mean_name).is_file() and (folder / place / std_name).is_file():
                return folder / place / mean_name, folder / place / std_name
    return None


def find_evaluator_files(folder: str | Path, meta_folder: str | Path | None = None) -> EvaluatorFiles:
    """Locate the released files under ``folder`` (the ``--evaluator`` folder):

    * the checkpoint ``text_mot_match/model/finest.tar`` (also under ``t2m/``, or ``finest.tar``);
    * the vocabulary ``our_vab_data.npy``, ``our_vab_words.pkl``, ``our_vab_idx.pkl`` in
      ``glove/``, the folder itself, its parent or the parent's ``glove/``;
    * the normalisation ``mean_eval.npy`` / ``std_eval.npy`` (or ``mean.npy`` / ``std.npy``) in
      ``meta_folder`` when given, else in the folder, ``meta/``, ``evaluator_meta/`` or the
      release's ``t2m/Comp_v6_KLD01/meta`` (``Comp_v6_KLD005``, TM2T's name for the same).

    Raises :class:`EvaluatorError` naming ``--evaluator`` and each file not found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluatorError(f"--evaluator {folder}: no such folder")
    missing = []
    checkpoint = next((folder / p for p in CHECKPOINT_PLACES if (folder / p).is_file()), None)
    if checkpoint is None:
        missing.append(f"the checkpoint ({' or '.join(CHECKPOINT_PLACES)})")
    vocabulary = _first(folder, VOCABULARY_PLACES, VOCABULARY_FILES)
    if vocabulary is None:
        found = [p for p in VOCABULARY_PLACES for n in VOCABULARY_FILES if (folder / p / n).is_file()]
        missing.append(f"the vocabulary ({', '.join(VOCABULARY_FILES)} together, in glove/ or the folder"
                       + (f"; only some found in {sorted(set(found))}" if found else "") + ")")
    meta = find_meta(meta_folder if meta_folder is not None else folder)
    if meta is None:
        where = f"--evaluator-meta {meta_folder}" if meta_folder is not None else "the folder (or --evaluator-meta DIR)"
        missing.append(f"the evaluator's normalisation (mean_eval.npy and std_eval.npy in {where})")
    if missing:
        raise EvaluatorError(f"--evaluator {folder}: not found: " + "; ".join(missing))
    return EvaluatorFiles(checkpoint, vocabulary, *meta)


# ------------------------------------------------------------------------------------------
# The figures
# ------------------------------------------------------------------------------------------
def distance_matrix(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[i, j] = |rows[i] - columns[j]|``."""
    rows, columns = np.asarray(rows, dtype=np.float64), np.asarray(columns, dtype=np.float64)
    return np.sqrt(((rows[:, None, :] - columns[None, :, :]) ** 2).sum(-1))


def matching_figures(motion_embeddings: np.ndarray, text_embeddings: np.ndarray, order: Sequence[int], *,
                     group_size: int = GROUP_SIZE, direction: str = "motion-to-text",
                     top_k: int = TOP_K) -> dict[str, float]:
    """R-Precision top-1..k and MM-Dist of paired embeddings (row i of each belongs together).

    ``order`` is the clips' random order; consecutive groups of ``group_size`` are scored and an
    incomplete last group is left out.  ``direction`` says what is ranked: for each motion the
    texts of its group (``motion-to-text``) or for each text the motions.  Ties keep the lower
    index first (a stable sort).  Returns ``{"R-Precision top-1", ..., "MM-Dist", "clips",
    "left_out"}``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    order = np.asarray(order)
    groups = len(order) // group_size
    if groups == 0:
        raise EvaluatorError(f"R-Precision needs at least {group_size} clips (groups of {group_size}); "
                             f"found {len(order)}")
    hits = np.zeros(top_k)
    matched = 0.0
    for g in range(groups):
        members = order[g * group_size:(g + 1) * group_size]
        motions, texts = motion_embeddings[members], text_embeddings[members]
        distances = distance_matrix(motions, texts) if direction == "motion-to-text" else distance_matrix(texts, motions)
        matched += float(np.trace(distances))
        ranking = np.argsort(distances, axis=1, kind="stable")
        position = np.argmax(ranking == np.arange(group_size)[:, None], axis=1)  # where row i's partner is
        hits += [(position < k).sum() for k in range(1, top_k + 1)]
    used = groups * group_size
    figures = {f"R-Precision top-{k}": float(hits[k - 1] / used) for k in range(1, top_k + 1)}
    figures.update({"MM-Dist": matched / used, "clips": used, "left_out": len(order) - used})
    return figures


def repeated_matching(motion_embeddings: np.ndarray, text_embeddings: Sequence[np.ndarray] | np.ndarray, *,
                      seed: int, replications: int, direction: str,
                      choose: Callable[[np.random.Generator], np.ndarray] | None = None) -> dict[str, Any]:
    """:func:`matching_figures` over ``replications`` random orders (seeds ``seed``, ``seed+1``,
    ...): ``{"mean": {...}, "interval": {...} (1.96 std / sqrt(n), as the published code reports),
    "runs": [...]}``.  ``choose(rng)``, when given, returns the text embeddings of one run (the
    reference row draws one of each clip's lines per run, with the same generator, after the order)."""
    runs = []
    for r in range(replications):
        rng = np.random.default_rng(seed + r)
        order = rng.permutation(len(motion_embeddings))
        texts = choose(rng) if choose is not None else text_embeddings
        runs.append(matching_figures(motion_embeddings, texts, order, direction=direction))
    names = [k for k in runs[0] if k not in ("clips", "left_out")]
    values = {k: np.array([run[k] for run in runs]) for k in names}
    return {"mean": {k: float(v.mean()) for k, v in values.items()},
            "interval": {k: float(1.96 * v.std() / np.sqrt(len(v))) for k, v in values.items()},
            "clips": runs[0]["clips"], "left_out": runs[0]["left_out"], "runs": runs}


def tokens_field(field: str) -> list[str]:
    """The ``word/POS`` tokens of a ``texts/*.txt`` line's second field, split on single spaces
    as the published loaders do (an empty field gives one empty token, which looks up as unk)."""
    return field.split(" ")
