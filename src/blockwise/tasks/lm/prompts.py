"""Instruction prompts the base model answers to make its self-distillation data.

Two kinds: ``build_prompts`` from real English text (Debian descriptions, the King James Bible, Ding phrases, read by
:mod:`blockwise.data.sources`) mixed with word lists, and ``build_chat_prompts`` from word lists alone (general chat
requests). Both are deterministic in their seed; ``chat_ids`` wraps a prompt in the model's chat template.
"""

from __future__ import annotations

import random
from typing import Sequence

TOPICS = ["the ocean", "a lighthouse keeper", "a city at night", "autumn", "a robot learning to paint", "friendship",
          "a mountain village", "the first day of school", "a lost dog", "time travel", "a small bakery", "the moon",
          "a chess game", "a thunderstorm", "an old library", "a train journey", "a garden", "a museum at midnight"]
CODE_TASKS = ["reverses a string", "checks whether a number is prime", "computes the factorial of n",
              "counts the words in a text", "merges two sorted lists", "finds the largest element of a list",
              "removes duplicates from a list", "computes the Fibonacci numbers up to n", "parses a CSV line",
              "converts Celsius to Fahrenheit", "checks whether a string is a palindrome", "sorts a dictionary by value",
              "reads a file and prints its lines", "computes the average of a list", "flattens a nested list",
              "implements binary search", "counts vowels in a string", "returns the n most common words"]
LANGS = ["Python", "JavaScript", "C", "Rust", "Go", "Java", "a shell script", "SQL"]
LIST_TOPICS = ["tips for learning a new language", "ways to save energy at home", "healthy breakfast ideas",
               "reasons to read books", "things to pack for a camping trip", "benefits of exercise",
               "common mistakes of new programmers", "ways to reduce stress", "uses of a Linux terminal",
               "facts about the solar system", "ideas for a rainy day", "tips for writing clear emails"]


def build_prompts(descriptions: Sequence[tuple[str, str]], passages: Sequence[str], phrases: Sequence[str],
                  n: int, seed: int) -> list[dict]:
    """``n`` varied instruction prompts: {"kind", "text"}. Deterministic in ``seed``."""
    rng = random.Random(seed)
    makers = [
        ("describe", lambda: f"Explain what this software is for: {rng.choice(descriptions)[0]}."),
        ("summarise", lambda: "Summarize the following text in a few sentences:\n\n"
                              + rng.choice([d for d in descriptions[:4000] if len(d[1]) > 80] or descriptions)[1][:600]),
        ("package", lambda: f"What is {rng.choice(descriptions)[0].lower()}? Give an example of when to use it."),
        ("verse", lambda: f"Explain the meaning of this verse in simple words: \"{rng.choice(passages)}\""),
        ("continue", lambda: f"Continue this text: {rng.choice(passages)}"),
        ("phrase", lambda: f"Use the phrase \"{rng.choice(phrases)}\" in three example sentences."),
        ("define", lambda: f"What does \"{rng.choice(phrases)}\" mean?"),
        ("story", lambda: f"Write a short story about {rng.choice(TOPICS)} and {rng.choice(phrases).lower()}."),
        ("code", lambda: f"Write a function in {rng.choice(LANGS)} that {rng.choice(CODE_TASKS)}."),
        ("list", lambda: f"List {rng.randint(3, 8)} {rng.choice(LIST_TOPICS)}."),
        ("email", lambda: f"Write a short email to a colleague about {rng.choice(descriptions)[0].lower()}."),
        ("question", lambda: f"Answer briefly: why is {rng.choice(TOPICS)} interesting?"),
    ]
    out = []
    for _ in range(n):
        kind, make = rng.choice(makers)
        out.append({"kind": kind, "text": make()})
    return out


# General chat prompts built from word lists alone: the kinds of request a user types (how-to, explanations,
# comparisons, tips, descriptions, stories, code, lists, notes). None of them is one of the benchmark's prompts
# (recipes/lm/prompts.json), whose subjects the lists below avoid; ``build_chat_prompts`` also drops exact matches.
HOWTO = ["bake a loaf of bread", "start running as a beginner", "write a cover letter", "plant tomatoes on a balcony",
         "learn to touch type", "set up a Python virtual environment", "back up the files on my laptop",
         "make pancakes", "prepare for a job interview", "clean a cast iron pan", "paint a room",
         "choose a good password", "tie a bowline knot", "care for a houseplant", "cook rice on the stove",
         "write a good commit message", "install a Linux distribution", "save money on groceries",
         "learn to juggle", "make a budget", "brew coffee with a French press", "study for an exam",
         "start a vegetable garden", "train a puppy to sit", "give a short presentation", "fold a paper crane"]
CONCEPTS = ["a database", "an operating system", "photosynthesis", "inflation", "a neural network", "gravity",
            "the internet", "DNA", "a black hole", "recursion", "encryption", "a vaccine", "electricity",
            "a spreadsheet", "supply and demand", "an API", "version control", "a volcano", "the immune system",
            "a hash table", "democracy", "renewable energy", "a web browser", "the stock market", "evolution",
            "a cloud server", "interest rates", "a programming language", "machine learning", "an earthquake"]
PAIRS = [("a virus", "a bacterium"), ("RAM", "a hard disk"), ("a lake", "a sea"), ("a crocodile", "an alligator"),
         ("Python", "JavaScript"), ("a list", "a tuple in Python"), ("speed", "velocity"), ("a loan", "a grant"),
         ("a frog", "a toad"), ("TCP", "UDP"), ("baking soda", "baking powder"), ("a comet", "an asteroid"),
         ("HTTP", "HTTPS"), ("a poem", "a song"), ("a republic", "a monarchy"), ("mass", "weight"),
         ("a compiler error", "a runtime error"), ("an ape", "a monkey"), ("a latte", "a cappuccino")]
GOALS = ["staying focused while working", "learning to cook", "keeping a tidy desk", "making new friends in a new city",
         "writing better essays", "saving for a holiday", "staying healthy in winter", "learning to draw",
         "keeping a journal", "running a meeting", "reading more books", "staying safe online",
         "getting started with photography", "travelling on a budget", "learning a musical instrument"]
SCENES = ["a busy market square at noon", "a snowy forest at dawn", "a small café on a rainy afternoon",
          "a desert road at sunset", "a crowded train station", "an empty beach in winter", "a mountain lake",
          "a city park in spring", "an old farmhouse kitchen", "a night sky far from any city", "a school playground",
          "a bookshop in the evening", "a fishing boat at sea", "a field of sunflowers", "a quiet hospital corridor"]
CHARACTERS = ["a bear who cannot sleep", "a girl who finds a map", "a robot who wants a garden", "a shy dragon",
              "an old sailor and his cat", "two friends lost in a city", "a boy who talks to birds",
              "a baker who loses her recipe book", "a turtle who wants to fly", "a knight afraid of the dark",
              "a mouse in a library", "a child who builds a boat"]
CODE = ["returns the sum of the even numbers in a list", "counts how often each character occurs in a string",
        "checks whether two words are anagrams", "converts a number to Roman numerals", "returns the median of a list",
        "capitalises the first letter of every word", "finds the longest word in a sentence",
        "checks whether a year is a leap year", "returns the greatest common divisor of two numbers",
        "rotates a list by k positions", "validates a phone number", "merges two dictionaries",
        "computes the area of a circle", "generates a random password", "reads a JSON file and prints its keys",
        "counts the lines of a file", "sorts a list of names alphabetically", "removes whitespace from a string"]
LANGUAGES = ["Python", "JavaScript", "Java", "C", "C++", "Rust", "Go", "TypeScript", "Ruby", "bash"]
SQL = ["lists all orders placed in the last 30 days", "counts the employees in each department",
       "finds the products that have never been ordered", "returns the average salary per job title",
       "deletes duplicate rows from a table of emails"]
LISTS = [("countries in South America", "their capitals"), ("vegetables", "their colours"),
         ("programming languages", "what each is used for"), ("famous painters", "one painting by each"),
         ("birds", "where they live"), ("board games", "how many players each needs"),
         ("kitchen tools", "what each is for"), ("types of clouds", "how to recognise them"),
         ("dog breeds", "their typical size"), ("European rivers", "the countries they flow through"),
         ("inventions of the 20th century", "who made them"), ("sports", "the equipment each needs")]
NOTES = [("a neighbour", "watered your plants while you were away"), ("a colleague", "covered your shift"),
         ("a friend", "helped you move house"), ("your grandmother", "sent you a birthday present"),
         ("a coach", "trained your team all season"), ("a doctor", "looked after you in hospital")]


STYLES = ["", " Keep it short.", " Use simple words.", " Answer in one paragraph.", " Include an example.",
          " Be concise."]
CODE_STYLES = ["", ", with comments", ", and explain how it works", ", with a short usage example"]


# A second, broader set (``build_chat_prompts(version=2)``): other subjects and other phrasings, one style suffix at
# most, so that the answers differ more from one another than the first set's did. Same rule: no benchmark prompt
# (tested), and none of the benchmark's requests (sleep tips, a compiler, the planets, a harbour town, ...).
V2_SUBJECTS = ["the printing press", "coral reefs", "the Roman empire", "honey bees", "the human heart", "glaciers",
               "the Silk Road", "solar panels", "rainforests", "the moon landing", "bicycles", "chess",
               "the Olympic games", "volcanic islands", "penguins", "the pyramids of Egypt", "electric cars",
               "the history of paper money", "wind turbines", "octopuses", "the human brain", "deserts", "tea ceremonies",
               "the Great Wall of China", "jazz music", "recycling", "the metric system", "bridges", "submarines",
               "earthworms", "the Renaissance", "maps", "satellites", "sourdough bread", "elephants", "clocks",
               "the alphabet", "tides", "libraries", "trains", "mushrooms", "castles", "whales", "the telephone",
               "cheese making", "migration of birds", "lighthouses", "windmills", "origami", "the Amazon river",
               "the Industrial Revolution", "dinosaurs", "the Northern Lights", "skyscrapers", "ants", "the violin",
               "hot air balloons", "the Vikings", "olive oil", "the Internet of Things", "typewriters", "sharks",
               "the Arctic", "chocolate", "the Eiffel Tower", "wolves", "compost", "calendars", "marathons",
               "ancient Greece", "the piano", "rice farming", "space stations", "the Sahara", "owls", "museums",
               "public transport", "photography", "wool", "the Moon", "rivers", "the bicycle helmet", "comic books",
               "the periodic table", "volcanoes in Iceland", "sign language", "fireworks", "the postal service",
               "submarine cables", "spiders", "kites", "the Mayan civilisation", "robots in factories", "potatoes"]
V2_AUDIENCES = ["a ten-year-old", "a university student", "my grandfather", "a new employee", "a tourist"]
V2_TASKS = ["write a resume", "organise a small wedding", "learn basic Spanish", "fix a leaking tap",
            "start a podcast", "plan a road trip", "make homemade pasta", "improve my handwriting", "grow herbs indoors",
            "write a short speech for a birthday", "set up a home network", "choose a laptop", "learn to swim as an adult",
            "keep a cat entertained", "make a smoothie", "plan a week of meals", "write a haiku", "negotiate a salary",
            "learn chess openings", "clean a laptop keyboard", "memorise a poem", "organise my email inbox",
            "make a paper airplane", "teach a child to ride a bike", "prepare for a marathon", "write unit tests",
            "debug a slow website", "read a scientific paper", "start journaling", "build a birdhouse",
            "make candles at home", "sharpen a kitchen knife", "host a board game night", "learn to knit",
            "write a product description", "apologise to a friend", "prepare for a long flight", "repot a cactus"]
V2_CODE = ["reverses the words in a sentence", "finds duplicate values in an array", "computes Fibonacci numbers",
           "converts Celsius to Fahrenheit", "checks whether a string is a palindrome", "flattens a nested list",
           "counts the vowels in a string", "returns the n largest values of a list", "implements binary search",
           "parses a CSV line into fields", "removes duplicates while keeping order", "computes a running average",
           "checks whether brackets in a string are balanced", "converts a string to title case",
           "implements a stack with push and pop", "returns the prime factors of a number",
           "groups words by their first letter", "computes the dot product of two vectors",
           "formats a number of seconds as hours and minutes", "shuffles a list", "transposes a matrix",
           "finds the most common word in a text", "implements bubble sort", "checks whether a number is a power of two",
           "converts a binary string to an integer", "truncates a string to a maximum length",
           "computes the distance between two points", "counts words in a text file", "zips two lists into pairs",
           "returns the day of the week for a date"]
V2_LANGUAGES = ["Python", "JavaScript", "Java", "C", "C++", "Rust", "Go", "TypeScript", "Ruby", "PHP", "Kotlin",
                "Swift", "C#", "Haskell", "Lua"]
V2_SQL = ["shows the total sales per month", "finds users who signed up but never logged in",
          "lists the three most expensive products in each category", "counts books per author",
          "updates the price of every product in a category by ten percent", "finds employees who earn more than "
          "their manager", "returns students with an average grade above 80", "joins orders with their customers",
          "lists cities with more than five stores", "finds the second highest salary"]
V2_WRITING = [("a poem", "the first snow of winter"), ("a limerick", "a forgetful wizard"),
              ("a short dialogue", "two strangers waiting for a bus"), ("a diary entry", "a first day at a new job"),
              ("a product review", "a pair of hiking boots"), ("a news report", "a town festival"),
              ("a letter", "a pen pal in another country"), ("a motivational message", "a team before a big match"),
              ("a recipe introduction", "a family soup"), ("a short fable", "an ant and a grasshopper"),
              ("an advertisement", "a new bakery"), ("a welcome message", "new members of a hiking club"),
              ("a bedtime story", "a sleepy owl"), ("a toast", "a friend's graduation"),
              ("a complaint letter", "a delayed parcel"), ("a short mystery", "a missing umbrella"),
              ("an invitation", "a summer barbecue"), ("a speech", "the opening of a library"),
              ("a description", "a robot vacuum cleaner"), ("a travel blog post", "a weekend in Lisbon")]
V2_QUESTIONS = ["Why is the sky blue?", "Why do leaves change colour in autumn?", "How do airplanes stay in the air?",
                "Why do we dream?", "How does a refrigerator keep food cold?", "Why is the ocean salty?",
                "How do magnets work?", "What causes thunder?", "How do bees make honey?", "Why do cats purr?",
                "How does a microwave oven heat food?", "What makes a rainbow?", "How do vaccines train the body?",
                "Why do we have seasons?", "How does GPS know where I am?", "Why does bread rise?",
                "How do noise-cancelling headphones work?", "What is the speed of light?", "How do fish breathe?",
                "Why do onions make people cry?", "How does a credit card work?", "What is a leap second?",
                "How do search engines rank pages?", "Why is exercise good for the brain?", "How do tides work?",
                "What is the tallest mountain on Earth?", "How does a battery store energy?",
                "Why do some animals hibernate?", "How are diamonds formed?", "What does a project manager do?"]
V2_COMPARE = [("a laptop", "a desktop computer"), ("coffee", "tea"), ("renting", "buying a home"),
              ("cats", "dogs as pets"), ("trains", "planes for travel in Europe"), ("SQL", "NoSQL databases"),
              ("e-books", "paper books"), ("running", "swimming"), ("Linux", "Windows"), ("a novel", "a short story"),
              ("solar power", "wind power"), ("git merge", "git rebase"), ("a city", "a village to live in"),
              ("classes", "functions in Python"), ("working from home", "working in an office")]
V2_LIST_THINGS = ["famous scientists and what they discovered", "spices and the dishes they are used in",
                  "desert animals and how they survive", "Shakespeare plays and their themes",
                  "Linux commands and what they do", "countries in Africa and their capitals",
                  "units of measurement and what they measure", "ancient wonders of the world",
                  "common houseplants and how much light they need", "Greek gods and what they ruled",
                  "data structures and when to use them", "types of pasta and matching sauces",
                  "famous bridges and where they are", "chemical elements and their symbols",
                  "ocean animals and what they eat", "classic novels and their authors",
                  "keyboard shortcuts and what they do", "yoga poses and their benefits",
                  "words that are often confused in English", "mountains and the countries they are in"]
V2_FORMS = ["a short poem", "a short story", "a riddle", "a song for children", "a tweet", "an encyclopedia entry"]
V2_COUNTS = ["three", "four", "five", "six", "eight", "ten"]
V2_STYLES = ["", " Keep it brief.", " Use bullet points.", " Write it for a child."]


def _chat_pool_v1() -> list[tuple[str, str]]:
    word = ["two", "three", "four", "five", "six", "seven"]
    s = STYLES
    return ([("instruction", f"How do I {x}? Give step-by-step instructions.{y}") for x in HOWTO for y in s]
            + [("instruction", f"Explain to a beginner what {x} is.{y}") for x in CONCEPTS for y in s]
            + [("instruction", f"What is the difference between {a} and {b}?{y}") for a, b in PAIRS for y in s]
            + [("instruction", f"Give me {w} tips for {x}.{y}") for w in word for x in GOALS for y in s]
            + [("prose", f"Write a short paragraph describing {x}.{y}") for x in SCENES for y in s]
            + [("prose", f"Tell a short story about {x}.{y}") for x in CHARACTERS for y in s]
            + [("prose", f"Describe {x} in simple terms.{y}") for x in CONCEPTS for y in s]
            + [("prose", f"Write a thank-you note to {a} who {b}.{y}") for a, b in NOTES for y in s]
            + [("code", f"Write a {lang} function that {x}{y}.") for lang in LANGUAGES for x in CODE
               for y in CODE_STYLES]
            + [("code", f"Write a SQL query that {x}.") for x in SQL]
            + [("list", f"Name {w} {a} and {b}.") for w in word for a, b in LISTS]
            + [("list", f"List {w} {a} with {b}.") for w in word for a, b in LISTS]
            + [("list", f"List the steps to {x}.") for x in HOWTO]
            + [("list", f"What are {w} {a}? Answer as a list.") for w in word for a, _ in LISTS])


def _chat_pool_v2() -> list[tuple[str, str]]:
    s, n = V2_STYLES, V2_COUNTS
    return ([("instruction", f"Explain {x} to {a}.") for x in V2_SUBJECTS for a in V2_AUDIENCES]
            + [("prose", f"Write a short paragraph about {x}.{y}") for x in V2_SUBJECTS for y in s]
            + [("instruction", f"Tell me {w} interesting facts about {x}.") for w in n[:4] for x in V2_SUBJECTS]
            + [("instruction", f"What is the history of {x}?{y}") for x in V2_SUBJECTS for y in s[:2]]
            + [("list", f"Write a quiz with {w} questions about {x}, with the answers.") for w in n[:2]
               for x in V2_SUBJECTS]
            + [("prose", f"Summarise what you know about {x} in {w} sentences.") for w in n[:3] for x in V2_SUBJECTS]
            + [("prose", f"Write {form} about {x}.") for form in V2_FORMS for x in V2_SUBJECTS]
            + [("instruction", f"How can I {x}?{y}") for x in V2_TASKS for y in s]
            + [("list", f"What do I need to {x}? Make a checklist.") for x in V2_TASKS]
            + [("instruction", f"What are common mistakes people make when they {x}?") for x in V2_TASKS[::2]]
            + [("code", f"Implement a function in {lang} that {x}.") for lang in V2_LANGUAGES for x in V2_CODE]
            + [("code", f"Write {lang} code that {x}, and show an example call.") for lang in V2_LANGUAGES[:6]
               for x in V2_CODE]
            + [("code", f"Write unit tests in {lang} for a function that {x}.") for lang in V2_LANGUAGES[:3]
               for x in V2_CODE]
            + [("code", f"Explain step by step how to write a function that {x}.") for x in V2_CODE]
            + [("code", f"Write an SQL query that {x}.{y}") for x in V2_SQL for y in ("", " Explain each clause.")]
            + [("prose", f"Write {a} about {b}.{y}") for a, b in V2_WRITING for y in s]
            + [("instruction", f"{q}{y}") for q in V2_QUESTIONS for y in s]
            + [("instruction", f"Compare {a} and {b}. Which would you choose and why?") for a, b in V2_COMPARE]
            + [("list", f"What are the pros and cons of {a} compared with {b}?") for a, b in V2_COMPARE]
            + [("list", f"List {w} {x}.") for w in n for x in V2_LIST_THINGS]
            + [("list", f"Make a table of {w} {x}.") for w in n[:3] for x in V2_LIST_THINGS])


def build_chat_prompts(n: int, seed: int, exclude: Sequence[str] = (), version: int = 1) -> list[dict]:
    """Up to ``n`` distinct general chat prompts {"kind", "text"} (instruction, code, prose, list), in a seeded random
    order, none equal to ``exclude``. Version 1's word lists allow about 2,300 distinct prompts; version 2 (other
    subjects and phrasings) about 3,800 more."""
    if version not in (1, 2):
        raise ValueError(f"chat prompt version must be 1 or 2, got {version}")
    pool = _chat_pool_v1() if version == 1 else _chat_pool_v2()
    banned = {t.strip().lower() for t in exclude}
    pool = [(kind, text) for kind, text in dict.fromkeys(pool) if text.lower() not in banned]
    random.Random(seed).shuffle(pool)
    return [{"kind": kind, "text": text} for kind, text in pool[:n]]


def chat_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a one-turn chat prompt with the model's chat template, ready for the assistant's answer."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


# Instructions built from documentation (issue 18's data at scale): manual pages, the Python standard library's
# docstrings, Debian package descriptions. Each template has a name; HELD_OUT_TEMPLATES are never used for training,
# so a held-out split made of them shares no template with the training prompts.
DOC_TEMPLATES = {
    "man": {
        "man_explain": "Explain what the Linux command `{name}` does ({summary}). Show two example uses.",
        "man_script": "Write a short shell script that uses `{name}` and explain each line.",
        "man_summary": "Summarize this manual page text in plain words:\n\n{desc}",
        "man_beginner": "I am new to Linux. What is `{name}` for, and when would I use it?",
        "man_options": "List the most useful options of `{name}` with a one-line explanation each.",
        "man_compare": "Compare `{name}` and `{other}`: what does each do and when would you choose one?",
        "man_howto": "How do I {summary_lower} on Linux?",
        "man_heldout": "Write a cheat sheet for the `{name}` command ({summary}).",
    },
    "py": {
        "py_explain": "Explain what `{name}` does in Python and show a short example.\n\nIts documentation says: {doc}",
        "py_example": "Write a small Python program that uses `{name}`.",
        "py_tutorial": "Write a short tutorial on `{name}` for a beginner.",
        "py_compare": "What is the difference between `{name}` and `{other}` in Python?",
        "py_test": "Write unit tests with pytest for code that calls `{name}`.",
        "py_doc": "Rewrite this documentation in simpler words: \"{doc}\"",
        "py_heldout": "Can you give me a quick overview of `{name}` from Python's standard library, with an example?",
    },
    "deb": {
        "deb_explain": "What is {short_lower}? Explain it to a colleague in a few sentences.",
        "deb_uses": "Give three situations where this software is useful: {short}.",
        "deb_summary": "Summarize the following text in a few sentences:\n\n{long}",
        "deb_review": "Write a short review of a program described as: {short}.",
        "deb_faq": "Write a short FAQ with three questions and answers about this software: {long}",
        "deb_heldout": "Write a README introduction for a project described like this: {long}",
    },
}
HELD_OUT_TEMPLATES = ("man_heldout", "py_heldout", "deb_heldout")


def build_doc_prompts(man: Sequence[tuple[str, str, str]], py: Sequence[tuple[str, str]],
                      debian: Sequence[tuple[str, str]], seed: int, per_item: int = 2,
                      held_out_items: int = 300, exclude: Sequence[str] = ()) -> list[dict]:
    """Prompts {"kind", "template", "text", "held_out"} from ``man`` (name, summary, description) pages, ``py``
    (name, docstring) entries and ``debian`` (short, long) descriptions: every item with ``per_item`` training
    templates of its source, and ``held_out_items`` items per source with the held-out template instead. Deterministic
    in ``seed``; the training prompts first, in a shuffled order, then the held-out ones."""
    rng = random.Random(seed)
    banned = {t.strip().lower() for t in exclude}
    train, held = [], []

    def lower(s: str) -> str:  # "Tool to …" -> "tool to …", but "HTTP …" stays
        return s[0].lower() + s[1:] if s[1:2].islower() else s

    sources = {"man": [dict(name=n, summary=s, desc=d or s, summary_lower=lower(s)) for n, s, d in man],
               "py": [dict(name=n, doc=d) for n, d in py],
               "deb": [dict(short=s, long=(lng or s)[:600], short_lower=lower(s)) for s, lng in debian
                       if len(s) > 10]}
    for source, items in sources.items():
        names = [it["name"] for it in items if "name" in it]  # {other}: another item's name (none for Debian's)
        templates = [t for t in DOC_TEMPLATES[source] if t not in HELD_OUT_TEMPLATES]
        held_t = next(t for t in DOC_TEMPLATES[source] if t in HELD_OUT_TEMPLATES)
        order = list(range(len(items)))
        rng.shuffle(order)
        for i, idx in enumerate(order):
            item = dict(items[idx], other=rng.choice(names) if names else "")
            chosen = [held_t] if i < held_out_items else rng.sample(templates, min(per_item, len(templates)))
            for t in chosen:
                text = DOC_TEMPLATES[source][t].format(**item)
                if text.lower() in banned:
                    continue
                (held if t == held_t else train).append({"kind": source, "template": t, "text": text,
                                                         "held_out": t == held_t})
    rng.shuffle(train)
    return train + held
