"""Trains the tiny fastText quality model the classifier tests load: `python train_fasttext.py OUT.bin`.

Runs in a throwaway venv with fasttext-wheel + numpy<2 (test_worker.py builds it): the data runtime's
fasttext-numpy2 predicts fine but its training hits "Encountered NaN" on these machines, and
fasttext-wheel's predict breaks under numpy 2. The .bin format is the same for both."""

from __future__ import annotations

import os
import random
import sys
import tempfile

import fasttext
from datapipe import demo_corpus as dc


def main(out: str) -> None:
    r = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.txt")
        with open(train, "w", encoding="utf-8") as fh:
            for _ in range(200):
                fh.write("__label__hq " + dc.en_sentence(r) + "\n")
                fh.write("__label__lq " + " ".join(r.choice(["buy", "cheap", "click", "now", "free", "!!!"])
                                                  for _ in range(12)) + "\n")
        model = fasttext.train_supervised(train, epoch=10, lr=0.1, dim=16, minCount=1, thread=1, verbose=0)
    model.save_model(out)


if __name__ == "__main__":
    main(sys.argv[1])
