#!/usr/bin/env bash
# What travels to the GPU machine besides the working tree (.devcarry/, ignored through .git/info/exclude):
# the MT corpus (recipes/mt/00_setup.sh) as one xz archive and Fashion-MNIST's IDX files (apt dataset-fashion-mnist), xz-compressed.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.devcarry/' .git/info/exclude || echo '/.devcarry/' >> .git/info/exclude
mkdir -p .devcarry
(cd data/mt && tar cJf ../../.devcarry/mt.tar.xz train.en train.de train.meta.tsv dev.en dev.de dev.meta.tsv \
  test.en test.de test.meta.tsv spm.model spm.vocab manifest.json)
for f in /usr/share/datasets/fashion-mnist/*-ubyte.gz; do  # xz: 4.5 MB less to carry than gzip (setup.sh unpacks)
  zcat "$f" | xz -9e -T2 > .devcarry/"$(basename "${f%.gz}")".xz
done
du -sh .devcarry
