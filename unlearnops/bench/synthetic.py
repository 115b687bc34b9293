"""The synthetic corpus: fictional news about invented people, a pure function of (seed, size).

Every name (people, cities, companies, awards) is assembled from syllables, so no real text or
person is copied. Each person gets one article (about 60-120 words of facts: town, company, job,
birth year, hobby, award, event) and, per question about those facts, one training document in
the evaluator's exact few-shot format. People are split into forget / retain / holdout (never
trained) plus separate people for the few-shot (ICL) examples. The same seed gives
byte-identical files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..corpus import QA, Corpus, VerbmemItem
from ..errors import UnlearnopsError, did_you_mean


@dataclass(frozen=True)
class CorpusSize:
    forget: int  # people whose article and QA the target learns and unlearning must remove
    retain: int  # people both models learn (utility)
    holdout: int  # people no model learns (the membership-inference reference)
    icl: int  # few-shot examples per ICL file, each about its own person
    topics: int  # body sentences per article (4 carry facts, 2 more are colour)
    qa_per_person: int  # questions per person, each its own training document
    retain_qa_eval: int  # retain questions kept in knowmem/retain_qa.json (evaluation cost)


SIZES: dict[str, CorpusSize] = {
    "tiny": CorpusSize(forget=6, retain=12, holdout=6, icl=2, topics=3, qa_per_person=2, retain_qa_eval=12),
    "default": CorpusSize(forget=16, retain=32, holdout=16, icl=3, topics=6, qa_per_person=3, retain_qa_eval=48),
}

ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "qu", "r",
          "s", "st", "t", "th", "tr", "v", "w", "z"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou", "y"]
CODAS = ["", "", "", "l", "n", "r", "s", "th", "m", "nd", "rk", "x"]
CITY_SUFFIXES = ["ford", "haven", "mere", "dale", "port", "wick", "by", "stead", "holm", "gate"]
COMPANY_KINDS = ["Logistics", "Foods", "Textiles", "Robotics", "Shipping", "Mining", "Media",
                 "Pharma", "Energy", "Optics", "Ceramics", "Software"]
AWARD_KINDS = ["Medal", "Prize", "Award", "Trophy", "Cup"]
JOBS = ["architect", "baker", "chemist", "cartographer", "nurse", "pilot", "surveyor", "librarian",
        "geologist", "violinist", "carpenter", "translator", "beekeeper", "dentist", "glassblower",
        "astronomer", "firefighter", "jeweller", "locksmith", "zoologist"]
HOBBIES = ["falconry", "rowing", "pottery", "chess", "fencing", "archery", "knitting", "sailing",
           "juggling", "origami", "kayaking", "gardening", "calligraphy", "birdwatching", "climbing",
           "cycling", "painting", "woodcarving", "fishing", "skating"]
EVENTS = ["a flood that closed the old bridge", "a power cut that lasted three days",
          "a storm that flattened the harbour wall", "a fire at the central library",
          "a strike at the local railway", "the opening of a new tram line",
          "a landslide on the coastal road", "the collapse of a famous clock tower",
          "a record heatwave in early spring", "the discovery of a buried Roman coin hoard"]
QUOTES = ["We simply did what anyone would do", "I never expected any of this",
          "The whole town deserves the credit", "It was the hardest year of my life",
          "Hard work always pays off in the end", "My family kept me going",
          "Nobody believed we could finish on time", "I would do it all again tomorrow"]


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    city: str
    company: str
    job: str
    birth_year: int
    hobby: str
    award: str
    award_year: int
    event: str
    quote: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


class _Names:
    """Unique invented words built from syllables (no word is handed out twice)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int, suffix: str = "") -> str:
        while True:
            stem = "".join(self._syllable() for _ in range(syllables))
            word = (stem + suffix).capitalize()
            if word not in self.used and len(word) <= 14:
                self.used.add(word)
                return word

    def _syllable(self) -> str:
        return self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)


def _people(rng: random.Random, names: _Names, count: int, cities: list[str]) -> list[Person]:
    people = []
    for _ in range(count):
        birth_year = rng.randint(1940, 1995)
        people.append(Person(
            first=names.word(2),
            last=names.word(rng.choice((2, 3))),
            city=rng.choice(cities),
            company=f"{names.word(2)} {rng.choice(COMPANY_KINDS)}",
            job=rng.choice(JOBS),
            birth_year=birth_year,
            hobby=rng.choice(HOBBIES),
            award=f"{names.word(2)} {rng.choice(AWARD_KINDS)}",
            award_year=rng.randint(birth_year + 25, 2023),
            event=rng.choice(EVENTS),
            quote=rng.choice(QUOTES),
        ))
    return people


# Interchangeable sentences per topic; an article picks one of each chosen topic, so articles
# differ in wording, not only in names. Every opening names the person, the job and the town.
OPENINGS = [
    "{name}, a {job} from {city}, has become one of the best known figures in the region.",
    "Residents of {city} know {name} as the {job} who never turns down a challenge.",
    "{name} still lives in {city}, where {first} has worked as a {job} for many years.",
    "For more than twenty years {name} has worked as a {job} in the town of {city}.",
]


@dataclass(frozen=True)
class Topic:
    facts: tuple[str, ...]  # Person attributes the sentence states (what questions may ask)
    sentences: tuple[str, ...]


FACT_TOPICS = [
    Topic(("birth_year",), (
        "Born in {birth_year}, {first} grew up above a small shop near the market square.",
        "{first} was born in {birth_year} and left school at sixteen.",
        "Records show that {first} was born in {birth_year}, the youngest of four children.",
    )),
    Topic(("company",), (
        "Today {first} is employed by {company}, a firm with offices along the river.",
        "{first} joined {company} after a short spell abroad and has stayed ever since.",
        "Colleagues at {company} describe {first} as patient, careful and stubborn.",
    )),
    Topic(("award", "award_year"), (
        "In {award_year} {first} received the {award} for services to the community.",
        "The {award} went to {first} in {award_year}, after a vote by local readers.",
        "{first} was given the {award} in {award_year}, a moment the family still celebrates.",
    )),
    Topic(("hobby",), (
        "Outside work {first} spends most weekends on {hobby}.",
        "{first} says that {hobby} is the best way to forget a long week.",
        "Friends say {first} talks about {hobby} more than about anything else.",
    )),
]
COLOUR_TOPICS = [
    Topic((), (
        "Many remember how {first} helped neighbours during {event}.",
        "During {event}, {first} organised food and shelter for dozens of families.",
        "{first} first made the news during {event}, when the town needed volunteers.",
    )),
    Topic((), (
        "\"{quote},\" {first} told reporters this week.",
        "Asked about the attention, {first} smiled and said: \"{quote}.\"",
        "\"{quote},\" said {first}, standing outside the town hall.",
    )),
]
CLOSINGS = [
    "A public celebration is planned in {city} next month.",
    "The council of {city} has promised to name a street after {first}.",
    "Local schools in {city} now invite {first} to speak every spring.",
]

# question template -> the Person attribute that answers it
QUESTIONS = {
    "In which town does {name} live?": "city",
    "Which company employs {name}?": "company",
    "What is the job of {name}?": "job",
    "In what year was {name} born?": "birth_year",
    "What is the favourite hobby of {name}?": "hobby",
    "Which award did {name} receive?": "award",
    "In what year did {name} receive the {award}?": "award_year",
}


def _fields(person: Person) -> dict[str, object]:
    return {**person.__dict__, "name": person.name}


def article(person: Person, topics: int, rng: random.Random) -> tuple[str, set[str]]:
    """An article with `topics` body sentences (fact-bearing ones first); returns it and the facts it states."""
    chosen = rng.sample(FACT_TOPICS, min(topics, len(FACT_TOPICS)))
    chosen += rng.sample(COLOUR_TOPICS, max(0, topics - len(FACT_TOPICS)))
    rng.shuffle(chosen)
    sentences = [rng.choice(OPENINGS), *(rng.choice(topic.sentences) for topic in chosen), rng.choice(CLOSINGS)]
    facts = {"city", "job"}.union(*(topic.facts for topic in chosen))
    fields = _fields(person)
    return " ".join(sentence.format(**fields) for sentence in sentences), facts


def questions(person: Person, facts: set[str], count: int, rng: random.Random) -> list[QA]:
    """`count` questions about facts the person's article states, in the evaluator's QA shape."""
    fields = _fields(person)
    chosen = rng.sample([template for template, fact in QUESTIONS.items() if fact in facts], count)
    return [QA(template.format(**fields), str(getattr(person, QUESTIONS[template]))) for template in chosen]


def qa_block(pairs: list[QA]) -> str:
    """The evaluator's few-shot format, byte for byte: 'Question: {q}\\nAnswer: {a}\\n\\n' per pair."""
    return "".join(f"Question: {pair.question}\nAnswer: {pair.answer}\n\n" for pair in pairs)


def verbmem_item(text: str, fraction: float = 0.3) -> VerbmemItem:
    """Split an article after a word (the prompt keeps the trailing space) at ~fraction of its words."""
    words = text.split(" ")
    cut = max(8, round(len(words) * fraction))
    prompt = " ".join(words[:cut]) + " "
    return VerbmemItem(prompt=prompt, gt=text[len(prompt):])


@dataclass(frozen=True)
class Synthetic:
    people: dict[str, list[Person]]  # forget, retain, holdout, forget_icl, retain_icl
    corpus: Corpus


def generate(seed: int = 0, size: str = "default") -> Synthetic:
    """Draw the people and build the corpus in memory; a pure function of (seed, size)."""
    shape = size_of(size)
    rng = random.Random(f"unlearnops-bench:{seed}")
    names = _Names(rng)
    cities = [names.word(2, rng.choice(CITY_SUFFIXES)) for _ in range(24)]
    people = {
        split: _people(rng, names, count, cities)
        for split, count in (("forget", shape.forget), ("retain", shape.retain), ("holdout", shape.holdout),
                             ("forget_icl", shape.icl), ("retain_icl", shape.icl))
    }
    icl = {split: [questions(p, set(QUESTIONS.values()), 1, rng)[0] for p in people[f"{split}_icl"]] for split in ("forget", "retain")}
    splits = ("forget", "retain", "holdout")
    articles: dict[str, list[str]] = {split: [] for split in splits}
    qa: dict[str, list[list[QA]]] = {split: [] for split in splits}
    for split in splits:
        for person in people[split]:
            text, facts = article(person, shape.topics, rng)
            articles[split].append(text)
            qa[split].append(questions(person, facts, shape.qa_per_person, rng))
    # Training documents: every article, plus one document per question: the ICL examples, then
    # the question and its answer, i.e. exactly the evaluator's few-shot prompt followed by the
    # gold answer (tiny models cannot answer from prose; see docs/bench.md). Holdout documents
    # have the same form and are never trained on.
    raw = {
        split: articles[split] + [qa_block(icl.get(split, icl["retain"]) + [pair]) for pairs in qa[split] for pair in pairs]
        for split in splits
    }
    retain_qa = [pair for pairs in qa["retain"] for pair in pairs]
    corpus = Corpus(
        root=Path("."),
        raw=raw,
        verbmem_forget=[verbmem_item(text) for text in articles["forget"]],
        knowmem={
            "forget_qa": [pair for pairs in qa["forget"] for pair in pairs],
            "forget_qa_icl": icl["forget"],
            "retain_qa": rng.sample(retain_qa, min(shape.retain_qa_eval, len(retain_qa))),
            "retain_qa_icl": icl["retain"],
        },
        privleak=articles,
    )
    return Synthetic(people=people, corpus=corpus)


def write_corpus(out: Path | str, seed: int = 0, size: str = "default") -> Corpus:
    """Write the corpus in MUSE's layout under `out` and return it."""
    corpus = generate(seed, size).corpus
    corpus.write(out)
    corpus.root = Path(out)
    return corpus


def size_of(size: str) -> CorpusSize:
    if size not in SIZES:
        raise UnlearnopsError(f"--size: unknown bench size '{size}'; {did_you_mean(size, SIZES, cutoff=0.5)}choose one of {', '.join(SIZES)}")
    return SIZES[size]
