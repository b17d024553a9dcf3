"""Text data: one parser per source (``sources``), the MT corpus built from them (``mt_corpus``), and what they share
(``pairs``: the aligned pair and the input error; ``hashing``: checksums and seeded orders)."""
