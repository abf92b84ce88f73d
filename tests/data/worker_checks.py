"""Checks of the pipeline's steps, run INSIDE the data runtime by test_worker.py (one check per process):
`python worker_checks.py NAME TMPDIR` with PYTHONPATH=src/internlm_chain/workers. Exit 0 = pass."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
from datapipe import demo_corpus as dc


def check_zh_rules_keep_normal_chinese(tmp):
    from datapipe.langid import LangId
    from datapipe.normalise import Normaliser
    from datapipe.rules import Rules
    from datapipe.spec import default_params

    r = random.Random(3)
    lid, norm, rules = LangId(["zh", "en"]), Normaliser(), Rules(**default_params("rules"))
    for _ in range(50):
        doc = {"id": "x", "text": dc.document(r, "zh"), "meta": {}}
        assert norm(doc) is None and lid(doc) is None, doc
        assert rules(doc) is None, (rules(doc), doc["text"])
    junk = {"id": "j", "text": "\n".join(["买一送一 限时优惠 快来抢购"] * 30), "meta": {"lang": "zh"}}
    assert rules(junk).startswith("max_dup_line"), rules(junk)
    # full-width punctuation survives normalisation; full-width digits become ASCII
    assert norm.normalise("你好，世界！２０２４年　") == "你好，世界！2024年"


def check_mixed_zh_en_is_zh(tmp):
    from datapipe.langid import LangId

    lid = LangId(["zh", "en"])
    text = "我们用 PyTorch 的 DataLoader 加载 ImageNet dataset，然后 fine-tune 一个 ResNet50 model，在 GPU 上训练。"
    assert lid.detect(text)[0] == "zh", lid.detect(text)
    assert lid.detect("THE RESEARCH TEAM PUBLISHED A DETAILED ANNUAL REPORT LAST SPRING.")[0] == "en"
    assert lid.detect("これは日本語の文章です。漢字も少し使います。")[0] == "ja"


def check_pii_masking(tmp):
    from datapipe.safety import cn_id_valid, mask_pii

    assert cn_id_valid("11010519491231002X") and not cn_id_valid("110105194912310021")
    text = ("联系 13812345678 或 +86 139-1234-5678，邮箱 a.b@example.com；身份证 11010519491231002X，"
            "订单号 110105194912310021 不是身份证。Call +1 (415) 555-0199.")
    masked, counts = mask_pii(text, ["email", "phone", "cn_id"])
    assert "13812345678" not in masked and "a.b@example.com" not in masked and "[ID]" in masked, masked
    assert "110105194912310021" in masked, masked  # bad checksum: left alone
    assert counts == {"email": 1, "cn_id": 1, "phone": 3}, counts


def check_blocklist_and_review(tmp):
    from datapipe.safety import Safety

    s = Safety(pii=[])
    doc = {"id": "a", "text": "这里有网络赌博、六合彩和赌博网站。", "meta": {}}
    assert s(doc).startswith("blocklist")
    doc = {"id": "b", "text": "An article mentions an Online Casino once.", "meta": {}}
    assert s(doc) is None and doc["_review"]
    doc = {"id": "c", "text": "clean", "meta": {"url": "https://www.casino.example/x"}}
    assert s(doc) == "blocked_domain: casino.example"


def _cluster_recall_precision(lang):
    from datapipe.dedup import NearCollector, cluster

    r = random.Random(7)
    docs, truth = [], {}
    for _i in range(300):
        docs.append(dc.document(r, lang))
    for _j in range(60):
        src = r.randrange(300)
        truth[len(docs)] = src
        docs.append(dc.near_copy(r, docs[src], lang))
    col = NearCollector()
    for t in docs:
        col.add({"text": t})
    return col, docs, truth, cluster


def check_near_dedup_zh_en(tmp):
    for lang in ("zh", "en"):
        col, docs, truth, cluster = _cluster_recall_precision(lang)
        prefix = os.path.join(tmp, lang)
        col.save(prefix)
        offsets = np.array([0, len(docs)])
        roots = cluster([prefix + ".keys.npy"], offsets, np.zeros(len(docs), bool), os.path.join(tmp, "spill"),
                        [prefix + ".sig.npy"], 0.6, partitions=3)  # partitions > 1: the out-of-core path
        found = sum(roots[i] == roots[s] for i, s in truth.items())
        dropped = [i for i in range(len(docs)) if roots[i] != i]
        wrong = [i for i in dropped if truth.get(i, i) != truth.get(int(roots[i]), int(roots[i]))]
        assert found / len(truth) >= 0.95, (lang, found, len(truth))
        assert len(wrong) <= 0.02 * len(dropped), (lang, wrong)


def check_bin_format_roundtrip(tmp):
    from datapipe.tokenize import BinWriter, read_bin

    w = BinWriter(os.path.join(tmp, "internevo", "zh"), "s", max_bytes=200)
    seqs = [[1, *range(i, i + 20), 2] for i in range(10)]
    for s in seqs:
        w.write(s)
    w.close()
    assert len(w.files) > 1  # rolled over at max_bytes
    back = [t for f in w.files for t in read_bin(f)]
    assert back == seqs
    meta = np.load(w.files[0] + ".meta")
    assert meta.dtype == np.int32 and meta.shape[1] == 2 and meta[0, 0] == 0


def check_fasttext_classifier_hook(tmp):
    """TMP/q.bin: the tiny quality model (train_fasttext.py), loaded with this runtime's fastText."""
    from datapipe.modelfilter import Classifier
    from datapipe.steps import build_doc_step

    path = os.path.join(tmp, "q.bin")
    r = random.Random(2)
    clf = Classifier(path, "hq", 0.5)
    good = {"id": "g", "text": dc.document(r, "en"), "meta": {}}
    bad = {"id": "b", "text": "buy cheap click now free !!! buy cheap click now", "meta": {}}
    assert clf(good) is None and good["meta"]["scores"]["quality"] > 0.5, good["meta"]
    assert clf(bad).startswith("quality") and bad["meta"]["scores"]["quality"] < 0.5, bad["meta"]
    # the same model as the safety step's classifier hook: high P(label) drops, middling goes to review
    step = build_doc_step({"name": "safety", "params": {"classifier": path, "classifier_label": "__label__lq",
                                                        "classifier_drop": 0.9, "classifier_review": 0.5,
                                                        "pii": []}}, ["en"])
    spam = {"id": "s", "text": "buy cheap click now free !!! buy cheap click now", "meta": {}}
    assert (step(spam) or "").startswith("unsafe_classifier"), spam["meta"]
    fine = {"id": "f", "text": dc.document(r, "en"), "meta": {}}
    assert step(fine) is None and not fine.get("_review")


def check_extract_html(tmp):
    from datapipe.extract import Extractor

    html = ("<html><body><nav>首页 新闻 关于我们</nav><article><h1>标题</h1><p>" + "研究人员今年春天完成了城市交通系统的升级，"
            "取得了显著的效果。" * 5 + "</p></article><footer>版权所有</footer></body></html>")
    for engine in ("trafilatura", "resiliparse"):
        doc = {"id": "h", "html": html, "text": "", "meta": {}}
        assert Extractor(engine)(doc) is None and "城市交通系统" in doc["text"], (engine, doc)


if __name__ == "__main__":
    globals()["check_" + sys.argv[1]](sys.argv[2])
