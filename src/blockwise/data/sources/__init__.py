"""One parser per text source, shared by the MT corpus builder and the LM prompt builder.

``ding``: the Ding dictionary; ``debian``: Debian package descriptions (English and German); ``gettext_catalogues``:
German ``.mo`` message catalogues; ``kjv``: the King James Bible (SWORD module); ``debian_docs``: Debian's
English/German documentation packages aligned block by block. Each MT reader returns
:class:`~blockwise.data.pairs.Pair` rows with counts; the LM readers return English text.
"""
