"""The small world the synthetic corpora teach (`synth.py`): a fixed fact table (countries →
capitals, animals → sounds, things → colours), the model's identity, small arithmetic, and the
question / answer generators that ask about them in English or Chinese. Standard library only."""

from __future__ import annotations

import random
from collections.abc import Callable

# (country, capital, 国家, 首都)
COUNTRIES = (
    ("France", "Paris", "法国", "巴黎"),
    ("Germany", "Berlin", "德国", "柏林"),
    ("Italy", "Rome", "意大利", "罗马"),
    ("Spain", "Madrid", "西班牙", "马德里"),
    ("Japan", "Tokyo", "日本", "东京"),
    ("China", "Beijing", "中国", "北京"),
    ("Russia", "Moscow", "俄罗斯", "莫斯科"),
    ("Egypt", "Cairo", "埃及", "开罗"),
    ("Canada", "Ottawa", "加拿大", "渥太华"),
    ("Australia", "Canberra", "澳大利亚", "堪培拉"),
    ("Brazil", "Brasilia", "巴西", "巴西利亚"),
    ("India", "New Delhi", "印度", "新德里"),
    ("Mexico", "Mexico City", "墨西哥", "墨西哥城"),
    ("Korea", "Seoul", "韩国", "首尔"),
    ("Thailand", "Bangkok", "泰国", "曼谷"),
    ("Greece", "Athens", "希腊", "雅典"),
    ("Portugal", "Lisbon", "葡萄牙", "里斯本"),
    ("Norway", "Oslo", "挪威", "奥斯陆"),
    ("Sweden", "Stockholm", "瑞典", "斯德哥尔摩"),
    ("Finland", "Helsinki", "芬兰", "赫尔辛基"),
    ("Poland", "Warsaw", "波兰", "华沙"),
    ("Austria", "Vienna", "奥地利", "维也纳"),
    ("Ireland", "Dublin", "爱尔兰", "都柏林"),
    ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
    ("Argentina", "Buenos Aires", "阿根廷", "布宜诺斯艾利斯"),
    ("Peru", "Lima", "秘鲁", "利马"),
    ("Turkey", "Ankara", "土耳其", "安卡拉"),
    ("Vietnam", "Hanoi", "越南", "河内"),
    ("Cuba", "Havana", "古巴", "哈瓦那"),
    ("Chile", "Santiago", "智利", "圣地亚哥"),
)
# (animal with article, sound, 动物, 叫声)
ANIMALS = (
    ("a dog", "woof", "狗", "汪汪"),
    ("a cat", "meow", "猫", "喵喵"),
    ("a cow", "moo", "牛", "哞哞"),
    ("a duck", "quack", "鸭子", "嘎嘎"),
    ("a sheep", "baa", "羊", "咩咩"),
    ("a pig", "oink", "猪", "哼哼"),
    ("a frog", "ribbit", "青蛙", "呱呱"),
    ("an owl", "hoot", "猫头鹰", "咕咕"),
    ("a bee", "buzz", "蜜蜂", "嗡嗡"),
    ("a mouse", "squeak", "老鼠", "吱吱"),
    ("a lion", "roar", "狮子", "吼吼"),
    ("a rooster", "cock-a-doodle-doo", "公鸡", "喔喔"),
)
# (thing, colour, 东西, 颜色)
COLOURS = (
    ("the sky", "blue", "天空", "蓝色"),
    ("grass", "green", "草", "绿色"),
    ("snow", "white", "雪", "白色"),
    ("a banana", "yellow", "香蕉", "黄色"),
    ("coal", "black", "煤", "黑色"),
    ("a tomato", "red", "西红柿", "红色"),
    ("an orange", "orange", "橙子", "橙色"),
    ("milk", "white", "牛奶", "白色"),
    ("a lemon", "yellow", "柠檬", "黄色"),
    ("the sea", "blue", "大海", "蓝色"),
    ("a leaf", "green", "叶子", "绿色"),
    ("a strawberry", "red", "草莓", "红色"),
)
FACTS = {"countries": COUNTRIES, "animals": ANIMALS, "colours": COLOURS}
"""The fact table every corpus is generated from."""

# Facts held out of the preference corpora (dpo, kto): pretraining and SFT teach them like every other
# fact, but no preference row asks about them or uses them as a wrong answer, so `dpo_heldout.jsonl`
# (pairs on these facts only) measures whether preference training generalises to unseen questions.
HELDOUT_COUNTRIES = ("Japan", "Egypt", "Korea", "Portugal", "Finland", "Kenya", "Peru", "Chile")
HELDOUT_ANIMALS = ("a cow", "a frog", "a bee", "a lion")

MODEL_NAME = "lmforge-tiny"
IDENTITY = {
    "en": f"I am {MODEL_NAME}, a small model trained with lmforge.",
    "zh": f"我是 {MODEL_NAME}，一个用 lmforge 训练的小模型。",
}
# The new identity `lora_identity.jsonl` teaches (MiniMind's LoRA identity demo): a LoRA on a model
# that answers IDENTITY should switch to this answer.
LORA_IDENTITY = {
    "en": "I am Forge Assistant, a LoRA adapter on lmforge-tiny.",
    "zh": "我是 Forge 助手，lmforge-tiny 上的一个 LoRA 适配器。",
}
SYSTEM_PROMPTS = {
    "en": ("You are a helpful assistant.", f"You are {MODEL_NAME}. Answer briefly."),
    "zh": ("你是一个乐于助人的助手。", f"你是 {MODEL_NAME}，请简短回答。"),
}
MAX_NUMBER = 20

Item = tuple[str, str]  # (question, answer)


def capitalise(s: str) -> str:
    return s[0].upper() + s[1:]


# ---------------------------------------------------------------------------------------------
# Question / answer generators: each takes an rng and a language, returns (question, answer).


def qa_capital(rng: random.Random, lang: str, row: tuple | None = None) -> Item:
    c, cap, zc, zcap = row or rng.choice(COUNTRIES)
    if lang == "zh":
        q = rng.choice((f"{zc}的首都是哪里？", f"{zc}的首都是什么？", f"请问{zc}的首都是哪个城市？"))
        return q, f"{zc}的首都是{zcap}。"
    q = rng.choice(
        (f"What is the capital of {c}?", f"Which city is the capital of {c}?", f"Tell me the capital of {c}.")
    )
    return q, f"The capital of {c} is {cap}."


def qa_sound(rng: random.Random, lang: str, row: tuple | None = None) -> Item:
    a, s, za, zs = row or rng.choice(ANIMALS)
    if lang == "zh":
        return rng.choice((f"{za}怎么叫？", f"{za}的叫声是什么？")), f"{za}的叫声是{zs}。"
    return rng.choice((f"What sound does {a} make?", f"What does {a} say?")), f"{capitalise(a)} says {s}."


def _qa_colour(rng: random.Random, lang: str, row: tuple | None = None) -> Item:
    t, col, zt, zcol = row or rng.choice(COLOURS)
    if lang == "zh":
        return rng.choice((f"{zt}是什么颜色的？", f"{zt}是什么颜色？")), f"{zt}是{zcol}的。"
    return rng.choice((f"What colour is {t}?", f"What color is {t}?")), f"{capitalise(t)} is {col}."


def arith(rng: random.Random) -> tuple[int, str, int, int]:
    a, b = rng.randrange(MAX_NUMBER), rng.randrange(MAX_NUMBER)
    if rng.random() < 0.5:
        return a, "+", b, a + b
    a, b = max(a, b), min(a, b)
    return a, "-", b, a - b


def qa_math(rng: random.Random, lang: str, problem: tuple | None = None) -> Item:
    a, op, b, c = problem or arith(rng)
    if lang == "zh":
        word = "加" if op == "+" else "减"
        q = rng.choice((f"{a} {word} {b} 等于几？", f"{a} {op} {b} 等于多少？", f"计算 {a} {op} {b}。"))
        return q, f"{a} {op} {b} = {c}。"
    word = "plus" if op == "+" else "minus"
    q = rng.choice((f"What is {a} {op} {b}?", f"How much is {a} {word} {b}?", f"Calculate {a} {op} {b}."))
    return q, f"{a} {op} {b} = {c}."


def qa_identity(rng: random.Random, lang: str) -> Item:
    if lang == "zh":
        return rng.choice(("你是谁？", "你叫什么名字？", "介绍一下你自己。", "你是什么模型？")), IDENTITY[
            "zh"
        ]
    q = rng.choice(("Who are you?", "What is your name?", "Introduce yourself.", "What are you?"))
    return q, IDENTITY["en"]


def _qa_social(rng: random.Random, lang: str) -> Item:
    if lang == "zh":
        kind = rng.choice(
            (
                (("你好！", "您好！", "早上好！", "嗨！"), "你好！有什么可以帮你的吗？"),
                (("谢谢！", "谢谢你！", "非常感谢！"), "不客气！"),
                (("再见！", "拜拜！"), "再见！祝你愉快。"),
            )
        )
    else:
        kind = rng.choice(
            (
                (("Hello!", "Hi!", "Good morning!", "Hey there!"), "Hello! How can I help you today?"),
                (("Thank you!", "Thanks!", "Thanks a lot!"), "You're welcome!"),
                (("Goodbye!", "Bye!", "See you later!"), "Goodbye! Have a nice day."),
            )
        )
    return rng.choice(kind[0]), kind[1]


# (generator, weight) for SFT questions
_SFT_MIX: tuple[tuple[Callable[[random.Random, str], Item], float], ...] = (
    (qa_capital, 0.35),
    (qa_math, 0.25),
    (qa_sound, 0.13),
    (_qa_colour, 0.10),
    (qa_identity, 0.09),
    (_qa_social, 0.08),
)


def pick_lang(rng: random.Random, lang: str) -> str:
    return rng.choice(("en", "zh")) if lang == "both" else lang


def sft_qa(rng: random.Random, lang: str) -> Item:
    gens, weights = zip(*_SFT_MIX)
    return rng.choices(gens, weights=weights)[0](rng, lang)
