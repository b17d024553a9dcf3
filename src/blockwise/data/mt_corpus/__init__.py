"""German–English parallel corpus for English→German translation.

Builds a fixed, seeded train/dev/test split from text that can be had offline
(see ``DATA.md``):

* **Ding** dictionary (Debian package ``trans-de-en``, ``/usr/share/trans/de-en``):
  lines ``German | variant :: English | variant``; variants are aligned pairwise,
  grammar/domain marks and notes are stripped, and the first synonym of each side
  is kept.  About 20k entries are real example sentences.
* **Debian package descriptions** and their German translations, fetched with the
  ordinary apt client into a folder of our own (the system's lists are left alone),
  joined on ``Description-md5`` and aligned paragraph by paragraph (and, where both
  sides agree, item by item and sentence by sentence).  Each pair keeps its source
  package so whole packages can be held out.
* **gettext catalogues** (German ``.mo`` files of installed programs): short software
  messages, optional, capped, train only (the installed set differs between
  machines, so it never feeds dev/test).

* **Debian documentation** (optional, ``--docs``, train only): man pages, LibreOffice/GNOME/GIMP help and the
  Debian books in English and German, aligned block by block (:mod:`blockwise.data.sources.debian_docs`).
  ``--extend data/mt --docs --out data/mt_docs`` (``extend``) adds them to a built corpus, keeping its dev/test
  files and sentencepiece model byte-identical.

Output (``--out DIR``): ``{train,dev,test}.{en,de}`` (one segment per line),
``{split}.meta.tsv`` (source, group, kind per line), ``manifest.json`` (counts,
SHA-256 of every file, inputs and parameters) and a joint sentencepiece model
``spm.model`` (pad=0, unk=1, bos=2, eos=3).

Usage::

    python -m blockwise.data.mt_corpus --out data/mt [--vocab-size 8000] [--seed 0]

Where things are: the parsers of the sources in :mod:`blockwise.data.sources` (shared with the LM prompt builder),
then ``clean`` (normalisation, filters), ``split`` (the seeded split), ``write`` (the files, sentencepiece),
``build`` (the pipeline and its manifest) and ``cli`` here. This package re-exports the names a user of the corpus
builder needs, the source readers included, so that ``mt_corpus.X`` reaches every step. These modules import only
the standard library, tqdm, sentencepiece and ``blockwise.data``.
"""

from __future__ import annotations

from ..pairs import CorpusError, Pair, word_count
from ..sources.debian import (align_description, fetch_debian_translations, iter_deb822, parse_source_map,
                              parse_translation_index, read_debian_descriptions, read_index_text, split_description,
                              split_sentences)
from ..sources.ding import DING_PATH, clean_ding_side, is_example_sentence, parse_ding_line, read_ding
from ..sources.gettext_catalogues import GETTEXT_EXCLUDE, LOCALE_DIR, clean_gettext_message, read_gettext
from .build import FORMAT_VERSION, SOURCES, BuildConfig, build_corpus
from .clean import CleanConfig, clean_pairs, english_key, normalize_text
from .cli import main
from .extend import ExtendConfig, extend_corpus, heldout_key
from .split import SPLITS, SplitConfig, split_corpus
from .write import train_sentencepiece, write_splits

__all__ = ["BuildConfig", "CleanConfig", "CorpusError", "DING_PATH", "ExtendConfig", "FORMAT_VERSION",
           "GETTEXT_EXCLUDE", "LOCALE_DIR", "Pair", "SOURCES", "SPLITS", "SplitConfig", "align_description",
           "build_corpus", "clean_ding_side", "clean_gettext_message", "clean_pairs", "english_key", "extend_corpus",
           "fetch_debian_translations", "heldout_key", "is_example_sentence", "iter_deb822", "main", "normalize_text",
           "parse_ding_line", "parse_source_map", "parse_translation_index", "read_debian_descriptions", "read_ding",
           "read_gettext", "read_index_text", "split_corpus", "split_description", "split_sentences",
           "train_sentencepiece", "word_count", "write_splits"]
