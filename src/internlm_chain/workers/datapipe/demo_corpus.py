"""A small deterministic zh+en demo corpus (stdlib only): clean documents, HTML pages, .txt notes,
exact and near duplicates, boilerplate lines, junk, PII, blocklisted text, a conversation file, and
broken inputs (bad JSON, missing text key, non-UTF-8 bytes, an empty file).

`.truth.json` (hidden, so it is not read as input) lists the planted duplicates and junk, so tests and the benchmark can score the pipeline.
"""

from __future__ import annotations

import gzip
import json
import os
import random

ZH_SUBJ = ["研究人员", "我们团队", "这家公司", "地方政府", "许多学生", "工程师们", "一位老师", "医院的医生", "农业专家",
           "城市规划师", "数据科学家", "志愿者们", "图书馆员", "年轻的创业者", "博物馆", "气象部门", "社区居民", "记者"]
ZH_TIME = ["今年春天", "去年秋天", "在过去的十年里", "最近几个月", "上周", "每年夏天", "在疫情之后", "近年来", "本月初", "多年以来"]
ZH_VERB = ["提出了一种新的数据清洗方法", "完成了城市交通系统的升级", "整理了大量的历史档案", "开展了关于睡眠质量的调查",
           "发布了一份详细的年度报告", "改进了农作物的灌溉方式", "建立了开放的学习平台", "研究了河流污染的来源",
           "组织了一次大型的读书活动", "设计了更加节能的建筑", "分析了网络购物的变化趋势", "训练了一个中文语言模型",
           "测试了新型电池的寿命", "记录了候鸟迁徙的路线", "讨论了老年人的养老问题", "修复了一座古老的石桥",
           "使用 Python 和 GPU 加速了模型训练", "比较了 Transformer 与 RNN 的效果", "推广了垃圾分类的做法",
           "翻译了一批经典的科学著作"]
ZH_END = ["，取得了显著的效果。", "，引起了社会的广泛关注。", "，得到了专家的认可。", "，但仍然存在一些困难。",
          "，参与者普遍感到满意。", "，并计划在明年继续推进。", "。", "，相关数据已经公开。", "，结果令人鼓舞！",
          "，这对当地经济很有帮助。"]
ZH_EXTRA = ["具体来说", "此外", "与此同时", "值得注意的是", "总的来看", "据介绍", "另一方面", "事实上"]
EN_SUBJ = ["The research team", "A local school", "Our engineers", "The city council", "Several volunteers",
           "A small startup", "The museum staff", "Farmers in the valley", "The hospital", "A group of students",
           "The library", "Weather scientists", "An independent journalist", "The committee", "Two doctors"]
EN_VERB = ["published a detailed annual report", "tested a new kind of battery", "repaired an old stone bridge",
           "studied the sources of river pollution", "designed a more efficient building",
           "organised a large reading event", "collected thousands of historical letters",
           "trained a small language model on public data", "measured air quality across the region",
           "improved the irrigation of local farms", "opened a free online course", "recorded the migration of birds",
           "reviewed the safety of public transport", "translated a series of classic books",
           "built a shared workshop for young makers", "analysed changes in online shopping"]
EN_TIME = ["last spring", "this year", "over the past decade", "in recent months", "last week", "every summer",
           "after the storm", "earlier this month", "for many years", "during the winter"]
EN_END = [", and the results were encouraging.", ", which drew wide public attention.",
          ", although some problems remain.", ", and most participants were satisfied.",
          ", with plans to continue next year.", ".", ", and the data has been made public.",
          ", which helped the local economy."]
EN_EXTRA = ["In addition,", "Meanwhile,", "According to the organisers,", "In fact,", "On the other hand,",
            "As a result,", "For example,", "Overall,"]
BOILER_ZH = "版权所有 © 2024 示例新闻网 保留所有权利 未经许可不得转载"
BOILER_EN = "Copyright 2024 Example News. All rights reserved. Subscribe to our newsletter for updates."


def zh_sentence(r: random.Random) -> str:
    s = r.choice(ZH_SUBJ) + r.choice(ZH_TIME) + r.choice(ZH_VERB) + r.choice(ZH_END)
    if r.random() < 0.4:
        s = r.choice(ZH_EXTRA) + "，" + s
    return s


def en_sentence(r: random.Random) -> str:
    s = f"{r.choice(EN_SUBJ)} {r.choice(EN_VERB)} {r.choice(EN_TIME)}{r.choice(EN_END)}"
    if r.random() < 0.4:
        s = f"{r.choice(EN_EXTRA)} {s[0].lower()}{s[1:]}"
    return s


def document(r: random.Random, lang: str, paragraphs: int | None = None) -> str:
    sent = zh_sentence if lang == "zh" else en_sentence
    paras = []
    for _ in range(paragraphs or r.randint(2, 4)):
        joiner = "" if lang == "zh" else " "
        paras.append(joiner.join(sent(r) for _ in range(r.randint(3, 6))))
    return "\n".join(paras)


def near_copy(r: random.Random, text: str, lang: str, rate: float = 0.03) -> str:
    """A near duplicate: a few characters (zh) or words (en) changed, plus one extra sentence."""
    if lang == "zh":
        chars = list(text)
        for i in r.sample(range(len(chars)), max(1, int(len(chars) * rate))):
            if chars[i] not in "，。！\n":
                chars[i] = r.choice("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动")
        return "".join(chars) + zh_sentence(r)
    words = text.split(" ")
    for i in r.sample(range(len(words)), max(1, int(len(words) * rate))):
        words[i] = r.choice(["new", "old", "local", "small", "large", "public", "many", "recent"])
    return " ".join(words) + " " + en_sentence(r)


def make_corpus(seed: int = 0, n_docs: int = 200, dup_rate: float = 0.15):
    """(records, truth): records are dicts with id, text, lang; truth lists planted duplicates."""
    r = random.Random(seed)
    records, truth = [], {"exact": {}, "near": {}}
    for i in range(n_docs):
        lang = "zh" if i % 2 == 0 else "en"
        records.append({"id": f"{lang}-{i:05d}", "text": document(r, lang), "lang": lang})
    originals = list(records)
    for j, src in enumerate(r.sample(originals, int(n_docs * dup_rate))):
        rid = f"{src['id']}-near{j}"
        records.append({"id": rid, "text": near_copy(r, src["text"], src["lang"]), "lang": src["lang"]})
        truth["near"][rid] = src["id"]
    for j, src in enumerate(r.sample(originals, max(1, int(n_docs * dup_rate / 3)))):
        rid = f"{src['id']}-exact{j}"
        text = src["text"].replace("。", "。 ", 1) if src["lang"] == "zh" else src["text"].upper()
        records.append({"id": rid, "text": text, "lang": src["lang"]})
        truth["exact"][rid] = src["id"]
    r.shuffle(records)
    return records, truth


def write_demo(out: str, seed: int = 0, n_docs: int = 200) -> str:
    r = random.Random(seed + 1)
    os.makedirs(out, exist_ok=True)
    records, truth = make_corpus(seed, n_docs)
    # boilerplate footers on a quarter of the web documents (removed by line de-duplication)
    for rec in records[::4]:
        rec["text"] += "\n" + (BOILER_ZH if rec["lang"] == "zh" else BOILER_EN)
    junk = [
        {"id": "junk-short", "text": "点击这里"},
        {"id": "junk-symbols", "text": "#### $$$ ### @@@ {{{ }}} ### ... ### $$$ ### @@@ " * 10},
        {"id": "junk-repeat", "text": "\n".join(["买一送一 限时优惠 快来抢购"] * 30)},
        {"id": "junk-french", "text": "Le conseil municipal a publié un rapport détaillé sur la qualité de l'air. "
                                      "Les habitants ont participé à une grande enquête publique cet été. " * 3},
        {"id": "junk-lorem", "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12},
        {"id": "unsafe-zh", "text": document(r, "zh") + "\n本站提供网络赌博和六合彩下注，赌博网站注册即送彩金。"},
        {"id": "borderline-en", "text": document(r, "en") + " A reader complained about an online casino advert."},
    ]
    pii = [
        {"id": "pii-zh", "text": document(r, "zh", 2) + "\n如有疑问请联系张先生，手机 13812345678，邮箱 zhang.san@example.com，"
                                 "身份证号 11010519491231002X。"},
        {"id": "pii-en", "text": document(r, "en", 2) + " Contact Jane at jane.doe@example.org or +1 (415) 555-0199."},
    ]
    web = [{"id": x["id"], "text": x["text"], "url": f"https://news.example/{x['id']}"} for x in records]
    half = len(web) // 2
    with open(os.path.join(out, "web_part1.jsonl"), "w", encoding="utf-8") as fh:
        for x in web[:half] + junk:
            fh.write(json.dumps(x, ensure_ascii=False) + "\n")
    with gzip.open(os.path.join(out, "web_part2.jsonl.gz"), "wt", encoding="utf-8") as fh:
        for x in web[half:] + pii:
            fh.write(json.dumps(x, ensure_ascii=False) + "\n")
    pages = os.path.join(out, "pages")
    os.makedirs(pages, exist_ok=True)
    for k in range(4):
        lang = "zh" if k % 2 == 0 else "en"
        body = "".join(f"<p>{p}</p>" for p in document(r, lang, 3).split("\n"))
        nav = "<nav><a href='/'>首页</a> <a href='/news'>新闻</a> <a href='/about'>关于我们</a></nav>"
        page = (f"<html><head><meta charset='utf-8'><title>page {k}</title></head><body>{nav}"
                f"<article><h1>{'新闻' if lang == 'zh' else 'News'} {k}</h1>{body}</article>"
                f"<footer>{BOILER_ZH if lang == 'zh' else BOILER_EN}</footer></body></html>")
        with open(os.path.join(pages, f"page{k}.html"), "w", encoding="utf-8") as fh:
            fh.write(page)
    notes = os.path.join(out, "notes")
    os.makedirs(notes, exist_ok=True)
    for k in range(3):
        with open(os.path.join(notes, f"note{k}.txt"), "w", encoding="utf-8") as fh:
            fh.write(document(r, "zh" if k % 2 == 0 else "en"))
    with open(os.path.join(out, "chat.jsonl"), "w", encoding="utf-8") as fh:
        for k in range(6):
            zh = k % 2 == 0
            q = "请介绍一下" + r.choice(ZH_VERB) + "的意义。" if zh else f"Why is it useful that someone {r.choice(EN_VERB)}?"
            a = document(r, "zh" if zh else "en", 1)
            fh.write(json.dumps({"id": f"chat-{k}", "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": q}, {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n")
    with open(os.path.join(out, "broken.jsonl"), "wb") as fh:
        fh.write(json.dumps({"id": "ok-1", "text": document(r, "en")}).encode() + b"\n")
        fh.write(b'{"id": "bad-json", "text": "unterminated\n')
        fh.write(b'{"id": "no-text", "body": "the text key is missing"}\n')
        fh.write(b'{"id": "latin1", "text": "caf\xe9 cr\xe8me"}\n')
    open(os.path.join(out, "empty.jsonl"), "w").close()
    truth["junk"] = [x["id"] for x in junk if not x["id"].startswith("borderline")]
    truth["malformed"] = 4
    with open(os.path.join(out, ".truth.json"), "w", encoding="utf-8") as fh:
        json.dump(truth, fh, indent=1, ensure_ascii=False)
    return out
