"""Deterministic, offline "slow thinking": readable Contextual Reasoning Instructions from a :class:`UserContext`.

:class:`RuleBasedReasoner` is the embedded default of the near-line reasoning step (no LLM needed) and the
fallback of :class:`models.reasoning.openai_compat.OpenAICompatibleReasoner`. It reads, in this order of
sentences in the instruction:

1. Life event: the strongest candidate over recent orders whose subcategory is a :data:`LIFE_EVENTS` trigger
   (or, without subcategories, whose title matches :data:`LIFE_EVENT_KEYWORDS`), ordered at most
   ``duration_days`` before ``as_of`` (30 days in keyword mode). Score of an event
   ``s = 1 - 0.5 * days_since_latest_trigger / duration + 0.1 * min(5, n_target_events_after_first_trigger)``;
   the best one (ties: most recent trigger, then name) is reported, at most one per user.
2. Cart: complements (:data:`COMPLEMENTS`, or :data:`GENERIC_COMPLEMENTS` by title keyword) of the newest
   ``max_cart_items`` cart items, minus what is already in the cart; in keyword mode a cart item without a known
   complement yields a ``cart`` intent on its own category (finish the purchase).
3. Search: the newest ``max_queries`` queries; targets are the subcategories whose product noun occurs in the
   query (longest match), else the query text itself.
4. Interests: the ``max_interests`` best action-weighted subcategories (else categories) of the window.
5. Calendar: active holidays/seasons of the context (synthetic :data:`HOLIDAYS` with regional shifts, or the
   month-based generic calendar), at most ``max_calendar``, strongest first.
6. Price and profile: ``price_sensitivity`` high/mid/low -> "budget"/"mid-price"/"premium" when the profile has it,
   else the price level of recent purchases; the age band when known.

Structured form (:class:`Instruction`): ``intents`` are ``Intent(name, targets, weight)`` with raw weights
``life = 3 s``, ``complement = 1.5``, ``cart = 1``, ``search = 1.2``, ``interest = score_c / sum(scores)`` (sums to 1),
``calendar = activity * event.weight``, ``popular = 1`` (default only), then normalized to sum to 1 and sorted by
weight (ties by name). Targets are subcategory keys in the synthetic taxonomy, else category names or keywords.

A user with no events in the window gets :data:`DEFAULT_INSTRUCTION` followed by the calendar and
price/profile sentences (no history is invented); its only non-calendar intent is ``popular``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from models.data.synthetic_catalog import COMPLEMENTS, LIFE_EVENTS, SUBCATEGORIES

from .context import DAY, ContextEvent, UserContext, paused_gc

DEFAULT_INSTRUCTION = "No recent activity: recommend popular, broadly appealing items."

# life event -> (what we infer, what they will look for)
LIFE_EVENT_TEXT: dict[str, tuple[str, str]] = {
    "new_baby": ("likely a new baby at home", "baby care and nursery items"),
    "moving_house": ("likely moving house", "storage, furnishing and cleaning items for the new home"),
    "new_pet": ("likely a new pet at home", "pet food, beds, toys and treats"),
    "starting_university": ("likely starting university", "a laptop, study supplies and dorm essentials"),
    "wedding": ("likely a wedding coming up", "kitchen, bedding and gift items for the new household"),
    "new_job": ("likely starting a new job", "home-office and commuting essentials"),
    "new_fitness_goal": ("likely a new fitness goal", "sportswear, gym gear and fitness trackers"),
}
# the phrase every instruction about that event contains (used to measure accuracy)
LIFE_EVENT_LABELS: dict[str, str] = {
    "new_baby": "new baby", "moving_house": "moving house", "new_pet": "new pet",
    "starting_university": "starting university", "wedding": "wedding", "new_job": "new job",
    "new_fitness_goal": "new fitness goal",
}
# keyword mode (no subcategory column): strong title keywords of a life-event trigger purchase
LIFE_EVENT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "new_baby": ("stroller", "pram", "maternity", "pregnancy", "bassinet"),
    "moving_house": ("moving box", "moving boxes", "packing tape", "bubble wrap"),
    "new_pet": ("leash", "cat litter", "litter box", "puppy pad", "puppy pads", "pet carrier"),
    "starting_university": ("textbook", "dorm"),
    "wedding": ("wedding", "bridal"),
    "new_job": ("briefcase",),
    "new_fitness_goal": ("running shoes", "fitness tracker", "resistance bands"),
}
GENERIC_LIFE_TARGETS: dict[str, tuple[str, ...]] = {
    "new_baby": ("diapers", "baby bottle", "baby clothes", "crib", "baby monitor", "car seat"),
    "moving_house": ("storage", "curtains", "lamp", "bedding", "cleaning", "furniture"),
    "new_pet": ("dog food", "cat food", "pet bed", "pet toy", "pet treats"),
    "starting_university": ("laptop", "backpack", "notebook", "desk lamp", "headphones"),
    "wedding": ("dinnerware", "cookware", "bedding", "gift"),
    "new_job": ("desk chair", "planner", "headphones", "laptop bag"),
    "new_fitness_goal": ("sportswear", "water bottle", "yoga mat", "dumbbells", "smartwatch"),
}
KEYWORD_EVENT_DAYS = 30  # how long a keyword-detected life event lasts

# keyword mode complements: title keyword -> complementary keywords
GENERIC_COMPLEMENTS: dict[str, tuple[str, ...]] = {
    "phone": ("phone case", "charger", "screen protector", "headphones"),
    "smartphone": ("phone case", "charger", "screen protector", "headphones"),
    "phone cable": ("charger", "power bank", "phone case"),  # accessories: longest match beats "phone"
    "phone case": ("screen protector", "charger"),
    "charger": ("phone cable", "power bank"),
    "laptop": ("laptop bag", "mouse", "usb hub", "headphones"),
    "camera": ("memory card", "tripod", "camera bag"),
    "printer": ("ink", "paper"),
    "console": ("controller", "video game", "headset"),
    "tv": ("soundbar", "hdmi cable", "wall mount"),
    "shoes": ("socks", "insoles"),
    "coffee": ("coffee beans", "mug", "filter"),
    "tent": ("sleeping bag", "camping stove", "headlamp"),
    "dog": ("dog treats", "leash", "dog toy"),
    "cat": ("cat litter", "cat toy", "cat treats"),
    "stroller": ("car seat", "diapers", "baby clothes"),
    "dress": ("handbag", "shoes", "jewelry"),
}

CALENDAR_TEXT: dict[str, tuple[str, str]] = {  # name -> (label, what it brings)
    "back_to_school": ("back to school", "school supplies, backpacks and laptops"),
    "halloween": ("Halloween", "costumes, candy and decorations"),
    "singles_day": ("Singles' Day", "gift shopping and electronics deals"),
    "thanksgiving": ("Thanksgiving", "cooking and hosting"),
    "black_friday": ("Black Friday", "deals on electronics and appliances"),
    "christmas_gifting": ("Christmas", "gift shopping, toys and gift wrap"),
    "winter_onset": ("winter", "warm clothing, bedding and heating"),
    "new_year_sales": ("the New Year sales", "discounts and fresh-start purchases"),
    "valentines_day": ("Valentine's Day", "gifts, jewelry and perfume"),
    "spring": ("spring", "garden, outdoor and cleaning items"),
    "mothers_day": ("Mother's Day", "gifts, beauty and flowers"),
    "summer": ("summer", "travel, outdoor and swimwear"),
}
PRICE_FROM_SENSITIVITY = {"high": "budget", "mid": "mid-price", "medium": "mid-price", "low": "premium"}
_MASS_NOUNS = {"cat litter", "cat food", "dog food", "snack mix", "candy", "coffee", "cereal", "baking mix", "gift wrap"}

_TRIGGER_EVENT = {s: e for e, le in LIFE_EVENTS.items() for s in le.trigger}
_TARGET_SET = {e: frozenset(le.targets) for e, le in LIFE_EVENTS.items()}


def _keyword_regex(words) -> re.Pattern:
    alts = sorted(set(words), key=lambda w: (-len(w), w))  # longest first: "hiking boots" before "boots"
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in alts) + r")\b", re.IGNORECASE)


_LIFE_KW_RE = _keyword_regex(w for ws in LIFE_EVENT_KEYWORDS.values() for w in ws)
_LIFE_KW_EVENT = {w: e for e, ws in LIFE_EVENT_KEYWORDS.items() for w in ws}
_COMP_KW_RE = _keyword_regex(GENERIC_COMPLEMENTS)
_NOUN_SUBS: dict[str, tuple[str, ...]] = {}
for _k, _s in SUBCATEGORIES.items():
    _NOUN_SUBS[_s.noun] = _NOUN_SUBS.get(_s.noun, ()) + (_k,)
_NOUN_RE = _keyword_regex(_NOUN_SUBS)


class Intent(NamedTuple):
    name: str  # "life_event:new_baby", "complement", "cart", "search", "interest", "holiday:halloween", "season:...", "popular"
    targets: tuple[str, ...]  # subcategory keys, category names or keywords
    weight: float  # normalized: the intents of one instruction sum to 1


@dataclass(frozen=True)
class Instruction:
    user_id: str
    text: str
    intents: tuple[Intent, ...]
    version: str
    price_level: str | None = None

    def intent_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.intents)

    @property
    def life_event(self) -> str | None:
        """The inferred life event name (e.g. "new_baby"), or None."""
        for i in self.intents:
            if i.name.startswith("life_event:"):
                return i.name.split(":", 1)[1]
        return None


@dataclass(frozen=True)
class RulesConfig:
    max_cart_items: int = 2
    max_complements: int = 4
    max_queries: int = 2
    max_interests: int = 3
    max_calendar: int = 3


# --------------------------------------------------------------------------------------------------- wording
def _with_article(noun: str) -> str:
    if noun in _MASS_NOUNS or (noun.endswith("s") and not noun.endswith("ss")):
        return noun
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _join(words: Sequence[str]) -> str:
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _ago(days: float) -> str:
    d = int(days)
    return "today" if d == 0 else "yesterday" if d == 1 else f"{d} days ago"


def _sub_label(key: str) -> str:
    s = SUBCATEGORIES.get(key)
    return s.leaf.lower() if s else key.replace("_", " ")


def _category_label(category: str) -> str:
    """The leaf of a category path, for prose: "Electronics > Laptops" -> "laptops"."""
    return category.split(">")[-1].strip().lower()


def _item_noun(e: ContextEvent) -> str:
    """How to call an item in prose: "a stroller", "moving boxes", else a title keyword, else its category leaf."""
    s = SUBCATEGORIES.get(e.subcategory)
    if s:
        return _with_article(s.noun)
    m = _COMP_KW_RE.search(e.title) or _LIFE_KW_RE.search(e.title)
    if m:
        return _with_article(m.group(1).lower())
    return _category_label(e.category) or "an item"  # a category name takes no article


@functools.lru_cache(maxsize=65536)
def _query_subcategories(query: str) -> tuple[str, ...]:
    found = _NOUN_RE.findall(query)
    if not found:
        return ()
    longest = max(len(f) for f in found)
    out: list[str] = []
    for f in found:
        if len(f) == longest:
            out += [k for k in _NOUN_SUBS[f.lower()] if k not in out]
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def _title_life_event(title: str) -> str | None:
    m = _LIFE_KW_RE.search(title)
    return _LIFE_KW_EVENT[m.group(1).lower()] if m else None


@functools.lru_cache(maxsize=65536)
def _title_complements(title: str) -> tuple[str, ...]:
    m = _COMP_KW_RE.search(title)
    return GENERIC_COMPLEMENTS[m.group(1).lower()] if m else ()


# --------------------------------------------------------------------------------------------------- reasoner
class RuleBasedReasoner:
    """Deterministic offline reasoner (see the module docstring for the rules and weights)."""

    def __init__(self, version: str = "rules-v1", config: RulesConfig = RulesConfig()):
        self.version = version
        self.config = config

    def generate(self, contexts: Sequence[UserContext]) -> list[str]:
        return [ins.text for ins in self.generate_structured(contexts)]

    def generate_structured(self, contexts: Sequence[UserContext]) -> list[Instruction]:
        with paused_gc():  # many small objects, no cycles
            return [self.reason(c) for c in contexts]

    # ---- one user
    def reason(self, ctx: UserContext) -> Instruction:
        if not isinstance(ctx, UserContext):
            raise ValueError(f"expected a UserContext, got {type(ctx).__name__}")
        sentences: list[str] = []
        intents: list[Intent] = []
        if ctx.has_history:
            for part in (self._life_event, self._cart, self._search, self._interests):
                got = part(ctx)
                if got is not None:
                    sentences.append(got[0])
                    intents.extend(got[1])
        else:
            sentences.append(DEFAULT_INSTRUCTION)
            intents.append(Intent("popular", (), 1.0))
        cal_sentences, cal_intents = self._calendar(ctx)
        sentences += cal_sentences
        intents += cal_intents
        price = self._price_level(ctx)
        profile = self._profile_sentence(ctx, price)
        if profile:
            sentences.append(profile)
        total = sum(i.weight for i in intents) or 1.0
        intents = sorted((Intent(i.name, i.targets, round(i.weight / total, 4)) for i in intents), key=lambda i: (-i.weight, i.name))
        return Instruction(ctx.user_id, " ".join(sentences), tuple(intents), self.version, price)

    def _life_event(self, ctx: UserContext):
        best = None  # (score, latest trigger ts, name, trigger event, targets, days)
        cands: dict[str, list[ContextEvent]] = {}
        for e in ctx.orders:  # newest first
            name = _TRIGGER_EVENT.get(e.subcategory) if e.subcategory else _title_life_event(e.title)
            if name is not None:
                cands.setdefault(name, []).append(e)
        for name, trig in cands.items():
            duration = LIFE_EVENTS[name].duration_days if trig[0].subcategory else KEYWORD_EVENT_DAYS
            days = (ctx.as_of - trig[0].timestamp) / DAY
            if days > duration:
                continue
            first_ts = trig[-1].timestamp
            if trig[0].subcategory:
                tset = _TARGET_SET[name]
                evidence = sum(1 for e in ctx.events if e.timestamp > first_ts and e.subcategory in tset)
                targets = LIFE_EVENTS[name].targets
            else:
                evidence = 0
                targets = GENERIC_LIFE_TARGETS[name]
            score = 1.0 - 0.5 * days / duration + 0.1 * min(5, evidence)
            key = (score, trig[0].timestamp, name)
            if best is None or key > best[:3]:
                best = (score, trig[0].timestamp, name, trig[0], targets, days)
        if best is None:
            return None
        score, _, name, trig, targets, days = best
        inferred, needs = LIFE_EVENT_TEXT[name]
        text = f"Bought {_item_noun(trig)} {_ago(days)}; {inferred}: looking for {needs}."
        return text, [Intent(f"life_event:{name}", tuple(targets), 3.0 * score)]

    def _cart(self, ctx: UserContext):
        if not ctx.cart:
            return None
        items = ctx.cart[: self.config.max_cart_items]
        in_cart = {e.subcategory for e in ctx.cart if e.subcategory}
        targets: list[str] = []
        unmatched: list[str] = []  # keyword mode: cart categories without a known complement
        for e in items:
            comps = COMPLEMENTS.get(e.subcategory, ()) if e.subcategory else _title_complements(e.title)
            if not comps and e.category and e.category not in unmatched:
                unmatched.append(e.category)
            targets += [c for c in comps if c not in in_cart and c not in targets]
        nouns = list(dict.fromkeys(_item_noun(e) for e in items))
        targets = targets[: self.config.max_complements]
        intents = [Intent("cart", tuple(unmatched), 1.0)] if unmatched else []
        if not targets:
            return f"Has {_join(nouns)} in the cart, not yet ordered.", intents
        labels = list(dict.fromkeys(_sub_label(t) if t in SUBCATEGORIES else t.lower() for t in targets))
        text = f"Has {_join(nouns)} in the cart: suggest accessories and complementary items ({_join(labels)})."
        return text, [Intent("complement", tuple(targets), 1.5), *intents]

    def _search(self, ctx: UserContext):
        if not ctx.queries:
            return None
        qs = ctx.queries[: self.config.max_queries]
        targets: list[str] = []
        for q in qs:
            subs = _query_subcategories(q)
            targets += [t for t in (subs or (q,)) if t not in targets]
        quoted = _join([f'"{q}"' for q in qs])
        return f"Searched for {quoted}.", [Intent("search", tuple(targets), 1.2)]

    def _interests(self, ctx: UserContext):
        top = (ctx.top_subcategories or ctx.top_categories)[: self.config.max_interests]
        if not top:
            return None
        total = sum(s for _, s in top) or 1.0
        labels = list(dict.fromkeys(_sub_label(c) if c in SUBCATEGORIES else _category_label(c) for c, _ in top))
        intents = [Intent("interest", (c,), s / total) for c, s in top]
        return f"Mostly browsing {_join(labels)}.", intents

    def _calendar(self, ctx: UserContext) -> tuple[list[str], list[Intent]]:
        sentences, intents = [], []
        for c in ctx.calendar[: self.config.max_calendar]:
            label, needs = CALENDAR_TEXT.get(c.name, (c.name.replace("_", " "), "seasonal items"))
            if c.kind == "season":
                sentences.append(f"{label[0].upper() + label[1:]} is setting in: expect {needs}.")
            else:
                sentences.append(f"With {label} close, expect {needs}.")
            intents.append(Intent(f"{c.kind}:{c.name}", tuple(c.targets), c.activity * c.weight))
        return sentences, intents

    @staticmethod
    def _price_level(ctx: UserContext) -> str | None:
        sens = ctx.profile.get("price_sensitivity")
        if sens is not None and str(sens).lower() in PRICE_FROM_SENSITIVITY:
            return PRICE_FROM_SENSITIVITY[str(sens).lower()]
        return ctx.price_level

    @staticmethod
    def _profile_sentence(ctx: UserContext, price: str | None) -> str:
        age = ctx.profile.get("age_band")
        if price and age is not None:
            return f"{price.capitalize()} shopper, age {age}."
        if price:
            return f"{price.capitalize()} shopper."
        if age is not None:
            return f"Age {age}."
        return ""
