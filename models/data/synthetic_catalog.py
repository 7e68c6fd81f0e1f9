"""Vocabularies, calendar and catalog of the embedded synthetic e-commerce world.

This module holds the *static knowledge* of the world (what a reasoner may know about it) and builds the item
catalog from a seed; :mod:`models.data.synthetic` adds users and interactions on top.

Public knowledge
----------------
- :data:`TOP_CATEGORIES` top-category key -> display name (15 of them), :data:`SUBCATEGORIES` snake_case leaf
  key -> :class:`Subcategory` (4-8 per top category, 107 in all) with attribute vocabularies and a price level.
- :data:`COMPLEMENTS` subcategory -> complementary subcategories (what goes in the same basket).
- :data:`ADDON_SUBCATEGORIES` cheap add-ons shown at checkout (batteries, socks, snacks ...).
- :data:`HOLIDAYS` the calendar: holidays and seasons as :class:`CalendarEvent` (month-day range, boosted
  subcategories, weight, per-region shift in days, linear ramp-in). :func:`calendar_activity` resolves it to
  an activity in [0, 1] per (day, region, event).
- :data:`LIFE_EVENTS` event name -> :class:`LifeEvent` (trigger subcategories bought first, target subcategories
  wanted for ``duration_days`` afterwards).

Catalog formulas (:func:`build_catalog`)
----------------------------------------
- Every subcategory gets one item, the remaining ``n_items - n_sub`` items are spread over subcategories with
  shares ``g_s ~ Gamma(4, 1)`` (normalized).
- Each item draws an adjective, a material, a variant and an audience uniformly from its subcategory's vocabularies
  and a brand from its top category's brand list (6 brands with price tiers ``TIERS``).
- ``price = median_s * tier_brand * exp(sigma_s * z)``, ``z ~ N(0, 1)`` (lognormal per subcategory), rounded to
  cents, at least 0.5.
- ``popularity = (rank + 1) ** -0.8`` for a random permutation ``rank`` of the items (Zipf-like, max 1).
- ``title = "{brand} {series} {adjective} {material} {noun}, {audience}, {variant}"`` (empty parts dropped), e.g.
  "Stride Flex waterproof mesh running shoes, men, size 42"; ``series`` is a product-line name from ``SERIES``;
  ``description`` is one of three sentence templates over the same attributes plus a top-category tagline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd


# --------------------------------------------------------------------------------------------------- taxonomy
@dataclass(frozen=True)
class Subcategory:
    key: str  # snake_case leaf key, e.g. "running_shoes"
    top: str  # top-category key, e.g. "sports"
    leaf: str  # display name of the leaf, e.g. "Running Shoes"
    noun: str  # what the product is called in titles and queries, e.g. "running shoes"
    price: float  # median price (currency units)
    adjectives: tuple[str, ...]
    materials: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    addon: bool = False  # cheap add-on suggested at checkout
    price_sigma: float = 0.35  # lognormal spread of prices


TOP_CATEGORIES: dict[str, str] = {
    "baby": "Baby",
    "electronics": "Electronics",
    "home": "Home",
    "kitchen": "Kitchen",
    "sports": "Sports",
    "outdoor": "Outdoor",
    "womens_fashion": "Women's Fashion",
    "mens_fashion": "Men's Fashion",
    "beauty": "Beauty",
    "toys": "Toys",
    "books": "Books",
    "grocery": "Grocery",
    "pets": "Pets",
    "garden": "Garden",
    "office": "Office & School",
}

# brand index i in a list gets price tier TIERS[i] (budget ... premium)
TIERS = (0.7, 0.85, 1.0, 1.0, 1.2, 1.5)
BRANDS: dict[str, tuple[str, ...]] = {
    "baby": ("Cuddlebug", "Tiny Steps", "Little Sprout", "Nestling", "Bebelux", "Maison Bebe"),
    "electronics": ("Voltix", "Nexa", "Aurion", "Kestrel", "Quanta", "Lumina Pro"),
    "home": ("Homely", "Casa Verde", "Nordhaus", "Loft & Linen", "Hearthstone", "Maison Clair"),
    "kitchen": ("ChefMate", "Panworks", "Kitchenette", "Copperleaf", "Ferro", "Gourmand"),
    "sports": ("Stride", "PulseFit", "Kinetic", "Velo", "Apex Athletic", "Olympus"),
    "outdoor": ("TrailCo", "Wildridge", "Northbound", "Summit Peak", "Alpenglow", "Glacier Line"),
    "womens_fashion": ("Mira", "Luna & Co", "Rosewood", "Celeste", "Atelier Nine", "Vionne"),
    "mens_fashion": ("Fieldman", "Ironbark", "Brook Street", "Harbor & Hale", "Carraway", "Sterling Hart"),
    "beauty": ("Purely", "Glowra", "Dermaline", "Velvet Bloom", "Lumiere", "Orchid Noir"),
    "toys": ("Playpal", "Tinker Town", "Wonderbox", "Brickton", "Starlight", "Jolly Giant"),
    "books": ("Inkwell", "Pageturner Press", "Lighthouse Books", "Meridian", "Oxbridge House", "Folio Classics"),
    "grocery": ("Daily Harvest", "Green Basket", "Crunchy Co", "Morning Mill", "Golden Spoon", "Artisan Table"),
    "pets": ("Pawsome", "Furry Friends", "Whisker", "TailWag", "Barkley", "Regal Paws"),
    "garden": ("Rootwise", "GreenThumb", "Yardpro", "Bloomfield", "Evergrow", "Terra Noble"),
    "office": ("Scribe", "Paperleaf", "Inkspot", "Deskline", "Officio", "Montclair"),
}

TAGLINES: dict[str, tuple[str, ...]] = {
    "baby": ("Gentle enough for the first months.", "Made with parents in mind."),
    "electronics": ("Comes with a two-year warranty.", "Fast setup, long battery life."),
    "home": ("Makes any room feel cosy.", "Easy to care for and built to last."),
    "kitchen": ("Dishwasher safe for easy cleanup.", "Built for everyday cooking."),
    "sports": ("Made for training hard.", "Light, durable and ready to move."),
    "outdoor": ("Tested in tough conditions.", "Packs small for the trail."),
    "womens_fashion": ("A wardrobe staple for every season.", "Flattering fit and easy care."),
    "mens_fashion": ("A classic cut that lasts.", "Smart enough for work, relaxed enough for weekends."),
    "beauty": ("Dermatologist tested.", "Cruelty free and gentle on skin."),
    "toys": ("Hours of creative play.", "Safety tested for little hands."),
    "books": ("A reader favourite.", "Thoughtfully written and beautifully printed."),
    "grocery": ("Great taste, every day.", "Sourced from trusted farms."),
    "pets": ("Loved by pets and their owners.", "Vet recommended."),
    "garden": ("Built for the garden season.", "Weather resistant."),
    "office": ("Keeps your work organised.", "Made for school, study and the office."),
}

# product lines: a brand's series name makes otherwise identical titles distinguishable (like real model names)
SERIES = ("Aero", "Core", "Flex", "Nova", "Prime", "Pure", "Nest", "Terra", "Vita", "Zen", "Orbit", "Luxe")
COLORS = ("black", "white", "grey", "navy", "red", "green", "beige")
CLOTH_SIZES = ("size xs", "size s", "size m", "size l", "size xl")
SHOE_SIZES = ("size 37", "size 38", "size 39", "size 40", "size 41", "size 42", "size 43", "size 44", "size 45")

_S = Subcategory
_SUBCATEGORY_LIST: tuple[Subcategory, ...] = (
    # baby
    _S("strollers", "baby", "Strollers", "stroller", 260, ("lightweight", "foldable", "all-terrain", "compact", "reversible", "jogging"), ("aluminium frame", "steel frame"), ("black", "grey", "navy", "sand"), ("newborn", "toddler"), price_sigma=0.4),
    _S("car_seats", "baby", "Car Seats", "car seat", 170, ("convertible", "rear-facing", "isofix", "padded", "rotating"), ("breathable fabric", "memory foam"), ("black", "grey", "red"), ("infant", "toddler")),
    _S("diapers", "baby", "Diapers", "diapers", 24, ("ultra-soft", "overnight", "eco", "hypoallergenic", "leak-proof"), ("cotton", "bamboo fibre"), ("size 1, pack of 80", "size 2, pack of 72", "size 3, pack of 64", "size 4, pack of 56"), ("newborn", "baby")),
    _S("baby_bottles", "baby", "Baby Bottles", "baby bottle", 12, ("anti-colic", "wide-neck", "slow-flow", "self-sterilising"), ("glass", "silicone", "bpa-free plastic"), ("150 ml", "260 ml", "set of 3"), ("newborn", "infant")),
    _S("baby_clothes", "baby", "Baby Clothes", "baby bodysuit", 16, ("organic", "striped", "footed", "long-sleeve", "printed"), ("cotton", "bamboo"), ("0-3 months", "3-6 months", "6-12 months", "12-18 months"), ("girls", "boys", "unisex")),
    _S("maternity_wear", "baby", "Maternity Wear", "maternity dress", 48, ("stretchy", "nursing-friendly", "empire-waist", "wrap"), ("cotton jersey", "modal"), CLOTH_SIZES, ("women",)),
    _S("baby_monitors", "baby", "Baby Monitors", "baby monitor", 95, ("video", "audio", "wifi", "night-vision", "two-way talk"), (), ("2.8 inch screen", "5 inch screen", "app-based")),
    _S("cribs", "baby", "Cribs", "crib", 230, ("convertible", "mini", "rocking", "3-in-1", "bedside"), ("pine wood", "beech wood", "white-painted wood"), ("standard size", "compact size")),
    # electronics
    _S("smartphones", "electronics", "Smartphones", "smartphone", 620, ("5g", "dual-sim", "flagship", "budget", "foldable", "rugged"), ("black", "silver", "blue", "green"), ("128 gb", "256 gb", "512 gb"), price_sigma=0.5),
    _S("laptops", "electronics", "Laptops", "laptop", 950, ("ultralight", "gaming", "2-in-1", "business", "student"), ("aluminium", "silver", "black"), ("13 inch", "14 inch", "15.6 inch", "16 inch"), price_sigma=0.45),
    _S("headphones", "electronics", "Headphones", "headphones", 110, ("wireless", "noise-cancelling", "over-ear", "in-ear", "sport"), ("black", "white", "rose gold"), ("bluetooth 5.3", "usb-c", "3.5 mm jack"), price_sigma=0.5),
    _S("televisions", "electronics", "Televisions", "tv", 560, ("4k", "oled", "smart", "qled", "hdr"), (), ("43 inch", "50 inch", "55 inch", "65 inch"), price_sigma=0.45),
    _S("smartwatches", "electronics", "Smartwatches", "smartwatch", 230, ("gps", "fitness", "waterproof", "lte"), ("aluminium", "steel", "silicone strap"), ("41 mm", "45 mm"), ("men", "women", "unisex")),
    _S("gaming_consoles", "electronics", "Gaming Consoles", "gaming console", 420, ("handheld", "next-gen", "portable", "retro"), ("black", "white"), ("standard edition", "digital edition", "bundle")),
    _S("phone_cables", "electronics", "Phone Cables", "phone cable", 9, ("fast-charging", "braided", "usb-c", "lightning", "magnetic"), ("nylon", "tpe"), ("1 m", "2 m", "pack of 2"), addon=True),
    _S("batteries", "electronics", "Batteries", "batteries", 7, ("alkaline", "rechargeable", "long-life"), (), ("aa, pack of 8", "aaa, pack of 8", "9v, pack of 2", "aa, pack of 16"), addon=True),
    # home
    _S("bedding", "home", "Bedding", "duvet", 70, ("winter-weight", "all-season", "hypoallergenic", "cooling", "quilted"), ("cotton", "microfibre", "down", "linen"), ("single", "double", "king")),
    _S("curtains", "home", "Curtains", "curtains", 45, ("blackout", "sheer", "thermal", "linen-look"), ("polyester", "cotton", "velvet"), COLORS[:5]),
    _S("lamps", "home", "Lamps", "lamp", 40, ("dimmable", "led", "floor", "bedside", "desk"), ("brass", "ceramic", "matte black"), ("warm white", "adjustable colour")),
    _S("space_heaters", "home", "Space Heaters", "space heater", 65, ("oil-filled", "ceramic", "fan", "infrared", "portable"), (), ("1500 w", "2000 w", "with timer")),
    _S("moving_boxes", "home", "Moving Boxes", "moving boxes", 28, ("heavy-duty", "double-wall", "foldable", "stackable"), ("cardboard", "recycled cardboard"), ("pack of 10", "pack of 20", "with tape")),
    _S("storage_bins", "home", "Storage Bins", "storage bins", 25, ("stackable", "collapsible", "clear", "lidded"), ("plastic", "fabric", "bamboo"), ("set of 3", "set of 6", "large")),
    _S("seasonal_decor", "home", "Seasonal Decor", "decoration", 20, ("halloween", "spooky", "light-up", "festive", "pumpkin"), ("plastic", "paper", "fabric"), ("set of 5", "large", "small")),
    _S("sofas", "home", "Sofas", "sofa", 650, ("modular", "sleeper", "compact", "reclining", "l-shaped"), ("velvet", "linen", "leather"), ("2-seater", "3-seater", "corner"), price_sigma=0.45),
    # kitchen
    _S("cookware", "kitchen", "Cookware", "pan", 55, ("non-stick", "induction-ready", "oven-safe", "heavy-base"), ("ceramic", "cast iron", "stainless steel", "copper"), ("20 cm", "24 cm", "28 cm", "set of 3")),
    _S("knife_sets", "kitchen", "Knife Sets", "knife set", 70, ("professional", "japanese", "forged", "ergonomic"), ("stainless steel", "damascus steel", "ceramic"), ("3 pieces", "5 pieces", "with block")),
    _S("coffee_makers", "kitchen", "Coffee Makers", "coffee maker", 95, ("espresso", "drip", "pod", "programmable", "french-press"), ("stainless steel", "black"), ("1 l", "1.5 l", "single serve"), price_sigma=0.5),
    _S("dinnerware", "kitchen", "Dinnerware", "dinner set", 60, ("classic", "rustic", "modern", "scandi"), ("porcelain", "stoneware", "bone china"), ("12 pieces", "16 pieces", "for 4", "for 6")),
    _S("kitchen_utensils", "kitchen", "Kitchen Utensils", "utensil set", 22, ("heat-resistant", "non-scratch", "essential"), ("silicone", "bamboo", "stainless steel"), ("5 pieces", "10 pieces")),
    _S("food_storage", "kitchen", "Food Storage", "food containers", 20, ("airtight", "leak-proof", "microwave-safe", "stackable"), ("glass", "bpa-free plastic"), ("set of 5", "set of 10")),
    _S("blenders", "kitchen", "Blenders", "blender", 80, ("high-speed", "personal", "immersion", "countertop"), ("glass jar", "tritan jar"), ("600 w", "1000 w", "1500 w")),
    # sports
    _S("running_shoes", "sports", "Running Shoes", "running shoes", 95, ("trail", "road", "waterproof", "lightweight", "cushioned", "racing"), ("mesh", "knit"), SHOE_SIZES, ("men", "women")),
    _S("yoga_mats", "sports", "Yoga Mats", "yoga mat", 30, ("non-slip", "extra-thick", "travel", "eco"), ("tpe", "natural rubber", "cork"), ("4 mm", "6 mm", "8 mm")),
    _S("dumbbells", "sports", "Dumbbells", "dumbbells", 60, ("adjustable", "hex", "neoprene-coated", "compact"), ("cast iron", "steel"), ("2 x 5 kg", "2 x 10 kg", "20 kg set")),
    _S("sportswear", "sports", "Sportswear", "training top", 35, ("breathable", "quick-dry", "seamless", "thermal", "compression"), ("polyester", "merino"), CLOTH_SIZES, ("men", "women")),
    _S("gym_bags", "sports", "Gym Bags", "gym bag", 40, ("waterproof", "duffel", "compact", "ventilated"), ("nylon", "canvas"), ("25 l", "40 l")),
    _S("water_bottles", "sports", "Water Bottles", "water bottle", 18, ("insulated", "leak-proof", "collapsible", "sport"), ("stainless steel", "tritan"), ("500 ml", "750 ml", "1 l")),
    _S("sports_socks", "sports", "Sports Socks", "sports socks", 9, ("cushioned", "ankle", "compression", "anti-blister"), ("cotton", "merino"), ("pack of 3", "pack of 5"), ("men", "women", "unisex"), addon=True),
    # outdoor
    _S("tents", "outdoor", "Tents", "tent", 180, ("waterproof", "ultralight", "pop-up", "4-season", "family"), ("ripstop nylon", "polyester"), ("2-person", "4-person", "6-person"), price_sigma=0.45),
    _S("sleeping_bags", "outdoor", "Sleeping Bags", "sleeping bag", 85, ("mummy", "3-season", "winter", "compact"), ("down", "synthetic fill"), ("comfort 5 c", "comfort -5 c", "comfort -15 c")),
    _S("hiking_backpacks", "outdoor", "Hiking Backpacks", "hiking backpack", 90, ("ventilated", "waterproof", "lightweight", "frameless"), ("ripstop nylon", "cordura"), ("20 l", "35 l", "50 l", "65 l"), ("men", "women", "unisex")),
    _S("hiking_boots", "outdoor", "Hiking Boots", "hiking boots", 130, ("waterproof", "insulated", "mid-cut", "lightweight"), ("leather", "suede", "gore-tex"), SHOE_SIZES, ("men", "women")),
    _S("ski_gear", "outdoor", "Ski Gear", "ski jacket", 190, ("insulated", "waterproof", "breathable", "softshell"), ("polyester", "gore-tex"), CLOTH_SIZES, ("men", "women", "kids")),
    _S("camping_stoves", "outdoor", "Camping Stoves", "camping stove", 55, ("portable", "compact", "double-burner", "windproof"), ("aluminium", "steel"), ("gas cartridge", "multi-fuel")),
    _S("headlamps", "outdoor", "Headlamps", "headlamp", 22, ("rechargeable", "bright", "waterproof", "red-light"), ("plastic", "aluminium"), ("300 lumen", "600 lumen", "1000 lumen")),
    # women's fashion
    _S("dresses", "womens_fashion", "Dresses", "dress", 60, ("floral", "wrap", "midi", "maxi", "evening", "knit"), ("cotton", "satin", "linen", "viscose"), CLOTH_SIZES, ("women",)),
    _S("womens_coats", "womens_fashion", "Coats", "coat", 150, ("puffer", "trench", "long", "hooded", "insulated", "double-breasted"), ("wool blend", "down", "cashmere blend", "polyester"), CLOTH_SIZES, ("women",)),
    _S("womens_boots", "womens_fashion", "Boots", "boots", 110, ("ankle", "knee-high", "chelsea", "waterproof", "heeled"), ("leather", "suede"), SHOE_SIZES[:7], ("women",)),
    _S("handbags", "womens_fashion", "Handbags", "handbag", 85, ("crossbody", "tote", "mini", "quilted", "shoulder"), ("leather", "vegan leather", "canvas"), COLORS[:5], ("women",), price_sigma=0.5),
    _S("scarves", "womens_fashion", "Scarves", "scarf", 28, ("chunky", "oversized", "knitted", "printed", "lightweight"), ("wool", "cashmere", "silk", "acrylic"), COLORS[:6], ("women", "men", "unisex")),
    _S("womens_knitwear", "womens_fashion", "Knitwear", "sweater", 55, ("cable-knit", "turtleneck", "cropped", "oversized", "v-neck"), ("merino wool", "cashmere", "cotton"), CLOTH_SIZES, ("women",)),
    _S("leggings", "womens_fashion", "Leggings", "leggings", 30, ("high-waist", "thermal", "seamless", "fleece-lined"), ("cotton", "nylon blend"), CLOTH_SIZES, ("women",)),
    # men's fashion
    _S("mens_coats", "mens_fashion", "Coats", "coat", 160, ("puffer", "parka", "overcoat", "hooded", "insulated", "quilted"), ("wool blend", "down", "polyester"), CLOTH_SIZES, ("men",)),
    _S("mens_shirts", "mens_fashion", "Shirts", "shirt", 40, ("slim-fit", "oxford", "button-down", "non-iron", "checked"), ("cotton", "linen", "flannel"), CLOTH_SIZES, ("men",)),
    _S("jeans", "mens_fashion", "Jeans", "jeans", 55, ("slim", "straight", "relaxed", "stretch", "tapered"), ("denim", "selvedge denim", "black denim"), ("w30 l32", "w32 l32", "w34 l32", "w36 l34"), ("men",)),
    _S("suits", "mens_fashion", "Suits", "suit", 320, ("slim-fit", "two-piece", "three-piece", "tailored"), ("wool", "wool blend", "linen"), ("size 46", "size 48", "size 50", "size 52"), ("men",)),
    _S("mens_boots", "mens_fashion", "Boots", "boots", 120, ("chelsea", "lace-up", "waterproof", "work", "desert"), ("leather", "suede", "nubuck"), SHOE_SIZES[3:], ("men",)),
    _S("mens_knitwear", "mens_fashion", "Knitwear", "sweater", 60, ("crew-neck", "cable-knit", "half-zip", "cardigan"), ("merino wool", "lambswool", "cotton"), CLOTH_SIZES, ("men",)),
    _S("socks", "mens_fashion", "Socks", "socks", 10, ("warm", "everyday", "patterned", "thermal", "no-show"), ("cotton", "wool blend", "bamboo"), ("pack of 3", "pack of 5", "pack of 7"), ("men", "women", "unisex"), addon=True),
    # beauty
    _S("skincare", "beauty", "Skincare", "face cream", 32, ("hydrating", "anti-aging", "vitamin c", "soothing", "spf 30"), (), ("30 ml", "50 ml", "100 ml"), ("dry skin", "oily skin", "all skin types")),
    _S("makeup", "beauty", "Makeup", "palette", 28, ("matte", "shimmer", "long-wear", "nude", "glitter"), (), ("12 shades", "18 shades", "compact")),
    _S("perfume", "beauty", "Perfume", "eau de parfum", 75, ("floral", "woody", "fresh", "oriental", "citrus"), (), ("30 ml", "50 ml", "100 ml"), ("women", "men", "unisex"), price_sigma=0.45),
    _S("hair_care", "beauty", "Hair Care", "shampoo", 14, ("repairing", "volumising", "sulfate-free", "anti-dandruff"), ("argan oil", "keratin", "tea tree"), ("250 ml", "500 ml", "duo pack")),
    _S("shaving", "beauty", "Shaving", "razor", 25, ("precision", "sensitive", "electric", "5-blade"), (), ("with 4 cartridges", "travel kit", "starter set"), ("men", "women")),
    _S("nail_polish", "beauty", "Nail Polish", "nail polish", 8, ("gel-effect", "quick-dry", "glitter", "matte"), (), ("red", "nude", "black", "pink", "orange"), addon=True),
    _S("lip_balm", "beauty", "Lip Balm", "lip balm", 5, ("tinted", "moisturising", "spf 15", "vegan"), (), ("single", "pack of 3"), addon=True),
    # toys
    _S("building_blocks", "toys", "Building Blocks", "building set", 45, ("creative", "technic", "castle", "space", "city"), (), ("250 pieces", "500 pieces", "1000 pieces"), ("ages 4+", "ages 8+", "ages 12+")),
    _S("dolls", "toys", "Dolls", "doll", 30, ("fashion", "baby", "talking", "collectible"), ("vinyl", "soft fabric"), ("30 cm", "45 cm", "with accessories"), ("ages 3+", "ages 6+")),
    _S("board_games", "toys", "Board Games", "board game", 32, ("strategy", "family", "party", "cooperative", "classic"), (), ("2-4 players", "2-6 players", "party edition"), ("ages 8+", "ages 12+", "adults")),
    _S("costumes", "toys", "Costumes", "costume", 28, ("halloween", "witch", "superhero", "zombie", "pirate", "vampire"), ("polyester", "felt"), CLOTH_SIZES, ("kids", "adults")),
    _S("plush_toys", "toys", "Plush Toys", "plush toy", 18, ("cuddly", "giant", "mini", "glow-in-the-dark"), ("soft plush", "organic cotton"), ("bear", "bunny", "dinosaur", "unicorn"), ("ages 0+", "ages 3+")),
    _S("rc_cars", "toys", "RC Cars", "rc car", 55, ("off-road", "high-speed", "stunt", "amphibious"), (), ("1:16 scale", "1:10 scale"), ("ages 6+", "ages 10+")),
    _S("puzzles", "toys", "Puzzles", "jigsaw puzzle", 16, ("landscape", "world map", "animal", "3d"), ("cardboard", "wood"), ("500 pieces", "1000 pieces", "2000 pieces"), ("kids", "adults")),
    # books
    _S("novels", "books", "Novels", "novel", 14, ("bestselling", "mystery", "romance", "fantasy", "sci-fi", "thriller"), ("paperback", "hardcover"), ("first edition", "special edition", "new edition"), ("adults", "young adults")),
    _S("textbooks", "books", "Textbooks", "textbook", 70, ("calculus", "economics", "biology", "programming", "chemistry"), ("paperback", "hardcover"), ("2nd edition", "5th edition", "latest edition"), ("university",)),
    _S("cookbooks", "books", "Cookbooks", "cookbook", 24, ("vegetarian", "quick", "baking", "italian", "holiday"), ("hardcover", "paperback"), ("illustrated", "spiral-bound")),
    _S("childrens_books", "books", "Children's Books", "picture book", 10, ("bedtime", "illustrated", "lift-the-flap", "rhyming"), ("board book", "hardcover", "paperback"), ("ages 0-3", "ages 3-5", "ages 5-8")),
    _S("parenting_books", "books", "Parenting Books", "parenting guide", 17, ("first-year", "sleep", "toddler", "positive"), ("paperback", "hardcover"), ("new edition",)),
    _S("self_help", "books", "Self-Help", "self-help book", 16, ("productivity", "mindfulness", "career", "habits", "finance"), ("paperback", "hardcover"), ("bestseller edition", "new edition")),
    # grocery
    _S("snacks", "grocery", "Snacks", "snack mix", 5, ("salted", "spicy", "protein", "sweet", "crunchy"), (), ("single bag", "pack of 6", "family size"), addon=True),
    _S("coffee_tea", "grocery", "Coffee & Tea", "coffee", 14, ("dark-roast", "medium-roast", "single-origin", "decaf", "organic"), (), ("250 g", "500 g", "1 kg", "capsules x 20")),
    _S("candy", "grocery", "Candy", "candy", 4, ("chocolate", "gummy", "sour", "halloween", "peppermint"), (), ("single bag", "party pack", "pack of 12"), addon=True),
    _S("breakfast_cereal", "grocery", "Breakfast Cereal", "cereal", 6, ("granola", "oat", "whole-grain", "honey", "chocolate"), (), ("375 g", "750 g")),
    _S("baking_supplies", "grocery", "Baking Supplies", "baking mix", 7, ("gluten-free", "pumpkin spice", "chocolate", "vanilla"), (), ("400 g", "1 kg")),
    _S("beverages", "grocery", "Beverages", "drink", 6, ("sparkling", "energy", "organic", "hot chocolate"), (), ("6 x 330 ml", "12 x 330 ml", "1.5 l")),
    _S("cleaning_supplies", "grocery", "Cleaning Supplies", "cleaner", 9, ("multi-surface", "eco", "antibacterial", "streak-free"), (), ("500 ml", "1 l", "refill pack")),
    # pets
    _S("dog_food", "pets", "Dog Food", "dog food", 38, ("grain-free", "puppy", "senior", "high-protein"), ("chicken", "salmon", "lamb"), ("2 kg", "6 kg", "12 kg")),
    _S("cat_food", "pets", "Cat Food", "cat food", 25, ("grain-free", "kitten", "indoor", "sensitive"), ("chicken", "tuna", "salmon"), ("1.5 kg", "4 kg", "pack of 12 pouches")),
    _S("pet_beds", "pets", "Pet Beds", "pet bed", 45, ("orthopedic", "calming", "heated", "washable"), ("plush", "memory foam"), ("small", "medium", "large"), ("dogs", "cats")),
    _S("pet_toys", "pets", "Pet Toys", "pet toy", 10, ("squeaky", "interactive", "chew", "catnip"), ("rubber", "rope", "plush"), ("small", "large", "set of 3"), ("dogs", "cats")),
    _S("leashes_collars", "pets", "Leashes & Collars", "leash", 18, ("retractable", "reflective", "padded", "adjustable"), ("nylon", "leather"), ("small", "medium", "large"), ("dogs", "cats")),
    _S("cat_litter", "pets", "Cat Litter", "cat litter", 15, ("clumping", "unscented", "low-dust", "odour-control"), ("clay", "silica", "wood pellets"), ("5 l", "10 l", "20 l")),
    _S("pet_treats", "pets", "Pet Treats", "pet treats", 6, ("dental", "training", "natural", "soft"), ("chicken", "beef", "fish"), ("100 g", "250 g"), ("dogs", "cats"), addon=True),
    # garden
    _S("plants_seeds", "garden", "Plants & Seeds", "seed kit", 12, ("organic", "herb", "flower", "vegetable", "bulb"), (), ("mixed pack", "starter kit", "10 varieties")),
    _S("garden_tools", "garden", "Garden Tools", "garden tool set", 35, ("ergonomic", "heavy-duty", "rust-proof", "compact"), ("stainless steel", "carbon steel"), ("3 pieces", "5 pieces")),
    _S("patio_furniture", "garden", "Patio Furniture", "patio set", 300, ("weatherproof", "foldable", "rattan-style", "bistro"), ("acacia wood", "aluminium", "rattan"), ("2 seats", "4 seats", "6 seats"), price_sigma=0.45),
    _S("lawn_mowers", "garden", "Lawn Mowers", "lawn mower", 250, ("cordless", "electric", "petrol", "robotic", "self-propelled"), (), ("33 cm", "40 cm", "46 cm"), price_sigma=0.45),
    _S("snow_shovels", "garden", "Snow Shovels", "snow shovel", 30, ("ergonomic", "wide", "telescopic", "heavy-duty"), ("aluminium", "polypropylene"), ("45 cm", "60 cm")),
    _S("bird_feeders", "garden", "Bird Feeders", "bird feeder", 20, ("hanging", "squirrel-proof", "window", "tube"), ("wood", "metal", "recycled plastic"), ("small", "large")),
    # office & school
    _S("school_supplies", "office", "School Supplies", "notebook", 6, ("ruled", "dotted", "spiral", "a4", "a5"), ("recycled paper", "hardcover"), ("pack of 3", "pack of 5", "single")),
    _S("pens", "office", "Pens", "pens", 5, ("gel", "ballpoint", "fineliner", "highlighter"), (), ("pack of 4", "pack of 10", "pack of 20"), addon=True),
    _S("backpacks", "office", "Backpacks", "backpack", 45, ("laptop", "school", "anti-theft", "rolltop"), ("polyester", "canvas", "recycled nylon"), ("20 l", "25 l", "30 l"), ("kids", "adults")),
    _S("desk_chairs", "office", "Desk Chairs", "desk chair", 180, ("ergonomic", "high-back", "gaming", "adjustable", "swivel"), ("mesh", "faux leather", "fabric"), ("black", "grey", "white"), price_sigma=0.45),
    _S("desks", "office", "Desks", "desk", 220, ("standing", "compact", "corner", "height-adjustable"), ("oak veneer", "white laminate", "walnut"), ("100 cm", "120 cm", "140 cm")),
    _S("printer_ink", "office", "Printer Ink", "ink cartridge", 30, ("high-yield", "standard", "eco"), (), ("black", "colour", "multipack")),
    _S("planners", "office", "Planners", "planner", 15, ("weekly", "daily", "academic", "undated"), ("leather-look", "linen cover"), ("a5", "a4", "pocket")),
    _S("gift_wrap", "office", "Gift Wrap", "gift wrap", 6, ("festive", "birthday", "kraft", "glitter"), ("paper", "recyclable paper"), ("3 rolls", "5 rolls", "with tags"), addon=True),
)
SUBCATEGORIES: dict[str, Subcategory] = {s.key: s for s in _SUBCATEGORY_LIST}
SUBCATEGORY_KEYS: tuple[str, ...] = tuple(SUBCATEGORIES)
TOP_CATEGORY_KEYS: tuple[str, ...] = tuple(TOP_CATEGORIES)
ADDON_SUBCATEGORIES: tuple[str, ...] = tuple(s.key for s in _SUBCATEGORY_LIST if s.addon)

COMPLEMENTS: dict[str, tuple[str, ...]] = {
    "strollers": ("car_seats", "baby_clothes", "diapers"),
    "car_seats": ("strollers", "baby_clothes"),
    "diapers": ("baby_bottles", "baby_clothes"),
    "baby_bottles": ("diapers", "baby_clothes"),
    "baby_clothes": ("diapers", "baby_bottles", "cribs"),
    "maternity_wear": ("baby_clothes", "strollers", "parenting_books"),
    "baby_monitors": ("cribs", "batteries"),
    "cribs": ("bedding", "baby_monitors", "baby_clothes"),
    "smartphones": ("phone_cables", "headphones", "smartwatches"),
    "laptops": ("phone_cables", "headphones", "backpacks", "desk_chairs"),
    "headphones": ("phone_cables", "batteries", "smartphones"),
    "televisions": ("gaming_consoles", "batteries", "phone_cables"),
    "smartwatches": ("phone_cables", "smartphones", "running_shoes"),
    "gaming_consoles": ("televisions", "batteries", "headphones"),
    "phone_cables": ("smartphones", "batteries"),
    "batteries": ("phone_cables", "rc_cars", "headlamps"),
    "bedding": ("curtains", "lamps", "storage_bins"),
    "curtains": ("bedding", "lamps"),
    "lamps": ("batteries", "bedding", "desks"),
    "space_heaters": ("bedding", "womens_knitwear", "mens_knitwear"),
    "moving_boxes": ("storage_bins", "cleaning_supplies"),
    "storage_bins": ("moving_boxes", "cleaning_supplies"),
    "seasonal_decor": ("costumes", "candy", "gift_wrap", "batteries"),
    "sofas": ("curtains", "lamps", "storage_bins"),
    "cookware": ("kitchen_utensils", "knife_sets", "cookbooks"),
    "knife_sets": ("cookware", "kitchen_utensils"),
    "coffee_makers": ("coffee_tea", "dinnerware"),
    "dinnerware": ("cookware", "kitchen_utensils", "food_storage"),
    "kitchen_utensils": ("cookware", "knife_sets", "baking_supplies"),
    "food_storage": ("dinnerware", "kitchen_utensils"),
    "blenders": ("kitchen_utensils", "food_storage", "cookbooks"),
    "running_shoes": ("sports_socks", "sportswear", "water_bottles"),
    "yoga_mats": ("sportswear", "water_bottles", "gym_bags"),
    "dumbbells": ("gym_bags", "sportswear", "water_bottles"),
    "sportswear": ("running_shoes", "sports_socks"),
    "gym_bags": ("water_bottles", "sports_socks"),
    "water_bottles": ("gym_bags", "sportswear"),
    "sports_socks": ("running_shoes", "sportswear"),
    "tents": ("sleeping_bags", "camping_stoves", "headlamps"),
    "sleeping_bags": ("tents", "hiking_backpacks"),
    "hiking_backpacks": ("hiking_boots", "water_bottles", "headlamps"),
    "hiking_boots": ("sports_socks", "hiking_backpacks"),
    "ski_gear": ("scarves", "sports_socks", "hiking_backpacks"),
    "camping_stoves": ("tents", "cookware"),
    "headlamps": ("batteries", "tents"),
    "dresses": ("handbags", "womens_boots", "scarves"),
    "womens_coats": ("scarves", "womens_boots", "womens_knitwear"),
    "womens_boots": ("socks", "womens_coats"),
    "handbags": ("dresses", "scarves"),
    "scarves": ("womens_coats", "mens_coats"),
    "womens_knitwear": ("scarves", "leggings"),
    "leggings": ("womens_knitwear", "sportswear", "socks"),
    "mens_coats": ("scarves", "mens_boots", "mens_knitwear"),
    "mens_shirts": ("suits", "jeans"),
    "jeans": ("mens_shirts", "mens_boots", "socks"),
    "suits": ("mens_shirts", "socks", "perfume"),
    "mens_boots": ("socks", "jeans"),
    "mens_knitwear": ("jeans", "mens_coats"),
    "socks": ("mens_boots", "womens_boots"),
    "skincare": ("makeup", "lip_balm"),
    "makeup": ("skincare", "nail_polish", "perfume"),
    "perfume": ("makeup", "gift_wrap"),
    "hair_care": ("skincare", "shaving"),
    "shaving": ("skincare", "hair_care"),
    "nail_polish": ("makeup",),
    "lip_balm": ("skincare", "makeup"),
    "building_blocks": ("puzzles", "board_games"),
    "dolls": ("plush_toys", "gift_wrap"),
    "board_games": ("puzzles", "snacks"),
    "costumes": ("seasonal_decor", "makeup", "candy"),
    "plush_toys": ("dolls", "gift_wrap"),
    "rc_cars": ("batteries",),
    "puzzles": ("board_games",),
    "novels": ("self_help", "coffee_tea"),
    "textbooks": ("school_supplies", "pens", "backpacks"),
    "cookbooks": ("cookware", "baking_supplies"),
    "childrens_books": ("plush_toys", "puzzles"),
    "parenting_books": ("baby_clothes", "childrens_books"),
    "self_help": ("planners", "novels"),
    "snacks": ("beverages", "candy"),
    "coffee_tea": ("coffee_makers", "snacks"),
    "candy": ("snacks", "seasonal_decor"),
    "breakfast_cereal": ("beverages", "coffee_tea"),
    "baking_supplies": ("kitchen_utensils", "cookbooks"),
    "beverages": ("snacks",),
    "cleaning_supplies": ("storage_bins",),
    "dog_food": ("pet_treats", "leashes_collars", "pet_toys"),
    "cat_food": ("cat_litter", "pet_treats"),
    "pet_beds": ("pet_toys", "pet_treats"),
    "pet_toys": ("pet_treats",),
    "leashes_collars": ("pet_treats", "dog_food"),
    "cat_litter": ("cat_food", "cleaning_supplies"),
    "pet_treats": ("pet_toys",),
    "plants_seeds": ("garden_tools",),
    "garden_tools": ("plants_seeds", "bird_feeders"),
    "patio_furniture": ("plants_seeds", "lamps"),
    "lawn_mowers": ("garden_tools",),
    "snow_shovels": ("mens_boots", "womens_boots", "scarves"),
    "bird_feeders": ("plants_seeds",),
    "school_supplies": ("pens", "backpacks", "planners"),
    "pens": ("school_supplies", "planners"),
    "backpacks": ("school_supplies", "water_bottles"),
    "desk_chairs": ("desks", "lamps"),
    "desks": ("desk_chairs", "lamps"),
    "printer_ink": ("pens", "school_supplies"),
    "planners": ("pens",),
    "gift_wrap": ("candy", "perfume"),
}


# --------------------------------------------------------------------------------------------------- calendar
@dataclass(frozen=True)
class CalendarEvent:
    """A holiday or season: boosts ``subcategories`` between ``start`` and ``end`` (month-day, inclusive).

    ``end`` before ``start`` means the range wraps into the next year. ``region_shift_days`` moves both ends per
    region (negative = earlier, e.g. winter comes first in the north). Activity ramps linearly from 1/ramp_days on
    the first day to 1 after ``ramp_days`` days (0 = no ramp). ``weight`` is the session-intent weight at full
    activity, relative to the user's own interests (weight 1).
    """

    name: str
    kind: str  # "holiday" or "season"
    start: str  # "MM-DD"
    end: str  # "MM-DD"
    subcategories: tuple[str, ...]
    weight: float
    region_shift_days: tuple[tuple[str, int], ...] = ()
    ramp_days: int = 0
    deal_event: bool = False  # shopping festival: price-sensitive users respond more


REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")

HOLIDAYS: tuple[CalendarEvent, ...] = (
    CalendarEvent("back_to_school", "holiday", "08-15", "09-20",
                  ("school_supplies", "pens", "backpacks", "textbooks", "laptops", "planners"), 0.6),
    CalendarEvent("halloween", "holiday", "10-08", "10-31",
                  ("costumes", "candy", "seasonal_decor", "makeup"), 1.4, ramp_days=10),
    CalendarEvent("singles_day", "holiday", "10-25", "11-11",
                  ("smartphones", "headphones", "laptops", "smartwatches", "perfume", "skincare", "building_blocks", "dolls"),
                  0.6, ramp_days=7, deal_event=True),
    CalendarEvent("thanksgiving", "holiday", "11-16", "11-26",
                  ("cookware", "baking_supplies", "dinnerware", "beverages"), 0.35),
    CalendarEvent("black_friday", "holiday", "11-20", "11-30",
                  ("televisions", "gaming_consoles", "laptops", "headphones", "coffee_makers", "blenders", "rc_cars", "board_games"),
                  0.7, ramp_days=5, deal_event=True),
    CalendarEvent("christmas_gifting", "holiday", "11-24", "12-24",
                  ("building_blocks", "dolls", "board_games", "plush_toys", "perfume", "gift_wrap", "novels"), 0.5, ramp_days=14),
    CalendarEvent("winter_onset", "season", "11-01", "02-28",
                  ("womens_coats", "mens_coats", "space_heaters", "scarves", "womens_knitwear", "mens_knitwear",
                   "womens_boots", "mens_boots", "bedding", "snow_shovels", "ski_gear"),
                  1.0, region_shift_days=(("north", -28), ("central", -10), ("east", -4), ("west", 0), ("south", 18)),
                  ramp_days=21),
)


def _parse_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"start_date must be an ISO date 'YYYY-MM-DD', got {value!r}") from err


def calendar_activity(start_date: str, n_days: int, holidays: tuple[CalendarEvent, ...] = HOLIDAYS) -> np.ndarray:
    """Activity in [0, 1] of each calendar event: array of shape (n_days, len(REGIONS), len(holidays)).

    ``act[d, r, h] = min(1, (date_d - start_{h,r} + 1) / ramp_h)`` while ``start_{h,r} <= date_d <= end_{h,r}``
    (1 inside the range when ramp_h = 0), else 0; ``start/end`` are the month-day range shifted by the region.
    """
    first = _parse_date(start_date)
    act = np.zeros((n_days, len(REGIONS), len(holidays)), dtype=np.float64)
    years = range(first.year - 1, (first + dt.timedelta(days=n_days)).year + 1)
    day0 = np.arange(n_days)
    for h, ev in enumerate(holidays):  # loop over ~7 events x 5 regions x ~3 years, not over days
        shifts = dict(ev.region_shift_days)
        sm, sd = (int(x) for x in ev.start.split("-"))
        em, ed = (int(x) for x in ev.end.split("-"))
        for r, region in enumerate(REGIONS):
            shift = shifts.get(region, 0)
            for year in years:
                start = dt.date(year, sm, sd)
                end = dt.date(year + (1 if (em, ed) < (sm, sd) else 0), em, ed)
                lo = (start - first).days + shift
                hi = (end - first).days + shift
                inside = (day0 >= lo) & (day0 <= hi)
                ramp = np.minimum(1.0, (day0 - lo + 1) / ev.ramp_days) if ev.ramp_days > 0 else np.ones(n_days)
                act[:, r, h] = np.maximum(act[:, r, h], np.where(inside, ramp, 0.0))
    return act


# --------------------------------------------------------------------------------------------------- life events
@dataclass(frozen=True)
class LifeEvent:
    """A life event: the user first buys one of ``trigger`` (the signal), then wants ``targets`` for
    ``duration_days`` days."""

    trigger: tuple[str, ...]
    targets: tuple[str, ...]
    duration_days: int


LIFE_EVENTS: dict[str, LifeEvent] = {
    "new_baby": LifeEvent(("maternity_wear", "strollers"),
                          ("diapers", "baby_bottles", "baby_clothes", "baby_monitors", "cribs", "car_seats", "parenting_books"), 35),
    "moving_house": LifeEvent(("moving_boxes",),
                              ("storage_bins", "curtains", "lamps", "sofas", "bedding", "cleaning_supplies", "cookware"), 28),
    "new_pet": LifeEvent(("leashes_collars", "cat_litter"), ("dog_food", "cat_food", "pet_beds", "pet_toys", "pet_treats"), 28),
    "starting_university": LifeEvent(("textbooks",),
                                     ("laptops", "backpacks", "school_supplies", "bedding", "lamps", "headphones", "coffee_makers", "storage_bins"), 28),
    "wedding": LifeEvent(("suits", "dresses"),
                         ("dinnerware", "cookware", "knife_sets", "perfume", "gift_wrap", "bedding", "coffee_makers"), 28),
    "new_job": LifeEvent(("mens_shirts", "handbags"),
                         ("desk_chairs", "desks", "planners", "headphones", "coffee_makers", "water_bottles", "pens"), 21),
    "new_fitness_goal": LifeEvent(("running_shoes",),
                                  ("sportswear", "sports_socks", "water_bottles", "yoga_mats", "dumbbells", "gym_bags", "smartwatches"), 28),
}


def _check_knowledge() -> None:
    """Fail at import if a table names an unknown subcategory (cheap guard against typos)."""
    known = set(SUBCATEGORIES)
    if set(COMPLEMENTS) != known:
        raise ValueError(f"COMPLEMENTS keys differ from SUBCATEGORIES: {sorted(set(COMPLEMENTS) ^ known)}")
    names = [s for v in COMPLEMENTS.values() for s in v]
    names += [s for h in HOLIDAYS for s in h.subcategories]
    names += [s for e in LIFE_EVENTS.values() for s in (*e.trigger, *e.targets)]
    bad = sorted(set(names) - known)
    if bad:
        raise ValueError(f"unknown subcategories in COMPLEMENTS/HOLIDAYS/LIFE_EVENTS: {bad}")
    if set(TOP_CATEGORIES) != {s.top for s in _SUBCATEGORY_LIST} or set(BRANDS) != set(TOP_CATEGORIES):
        raise ValueError("TOP_CATEGORIES, BRANDS and SUBCATEGORIES disagree on the top categories")


_check_knowledge()


# --------------------------------------------------------------------------------------------------- catalog
def _pick(vocab: tuple[str, ...], idx: np.ndarray) -> np.ndarray:
    """vocab[idx] as an object array ('' when the vocabulary is empty)."""
    if not vocab:
        return np.full(len(idx), "", dtype=object)
    return np.asarray(vocab, dtype=object)[idx]


def _join(parts: list[np.ndarray], sep: str) -> np.ndarray:
    """Join object arrays of strings with ``sep``, skipping empty parts (elementwise, no Python loop)."""
    out = parts[0].copy()
    for p in parts[1:]:
        nonempty_out = out != ""
        nonempty_p = p != ""
        glue = np.where(nonempty_out & nonempty_p, sep, "").astype(object)
        out = out + glue + p
    return out


def build_catalog(n_items: int, rng: np.random.Generator) -> pd.DataFrame:
    """The item table (see the module docstring for the formulas).

    Also returns internal helper columns ``adj_idx`` (adjective index within the subcategory), which the
    interaction generator needs to write search queries; :func:`models.data.synthetic.generate_world` drops it.
    """
    n_sub = len(SUBCATEGORY_KEYS)
    if n_items < n_sub:
        raise ValueError(f"n_items must be >= {n_sub} (one item per subcategory), got {n_items}")
    share = rng.gamma(4.0, 1.0, size=n_sub)
    extra = rng.choice(n_sub, size=n_items - n_sub, p=share / share.sum())
    sub = np.sort(np.concatenate([np.arange(n_sub), extra]))  # items grouped by subcategory

    n = n_items
    adj = np.zeros(n, dtype=np.int64)
    parts = {k: np.empty(n, dtype=object) for k in ("adj", "mat", "var", "aud", "noun", "brand", "top", "leaf", "tag")}
    price = np.empty(n)
    starts = np.searchsorted(sub, np.arange(n_sub + 1))
    for s, key in enumerate(SUBCATEGORY_KEYS):  # loop over ~107 subcategories; items inside are vectorized
        lo, hi = starts[s], starts[s + 1]
        m = hi - lo
        spec = SUBCATEGORIES[key]
        a = rng.integers(len(spec.adjectives), size=m)
        adj[lo:hi] = a
        parts["adj"][lo:hi] = _pick(spec.adjectives, a)
        parts["mat"][lo:hi] = _pick(spec.materials, rng.integers(max(1, len(spec.materials)), size=m))
        parts["var"][lo:hi] = _pick(spec.variants, rng.integers(max(1, len(spec.variants)), size=m))
        parts["aud"][lo:hi] = _pick(spec.audiences, rng.integers(max(1, len(spec.audiences)), size=m))
        parts["noun"][lo:hi] = spec.noun
        b = rng.integers(len(TIERS), size=m)
        parts["brand"][lo:hi] = _pick(BRANDS[spec.top], b)
        parts["top"][lo:hi] = spec.top
        parts["leaf"][lo:hi] = f"{TOP_CATEGORIES[spec.top]} > {spec.leaf}"
        parts["tag"][lo:hi] = _pick(TAGLINES[spec.top], rng.integers(len(TAGLINES[spec.top]), size=m))
        price[lo:hi] = spec.price * np.asarray(TIERS)[b] * np.exp(spec.price_sigma * rng.standard_normal(m))
    price = np.maximum(0.5, np.round(price, 2))

    series = np.asarray(SERIES, dtype=object)[rng.integers(len(SERIES), size=n)]
    head = _join([parts["brand"], series, parts["adj"], parts["mat"], parts["noun"]], " ")
    title = _join([head, parts["aud"], parts["var"]], ", ")
    # three description templates over the same attributes
    cap_adj = pd.Series(parts["adj"]).str.capitalize().to_numpy(dtype=object)
    for_aud = np.where(parts["aud"] != "", ", for " + parts["aud"], "").astype(object)
    in_mat = np.where(parts["mat"] != "", ", in " + parts["mat"], "").astype(object)
    d0 = cap_adj + " " + parts["noun"] + " from " + parts["brand"] + in_mat + for_aud + ". Available as " + parts["var"] + ". " + parts["tag"]
    d1 = "The " + parts["brand"] + " " + parts["noun"] + ": " + parts["adj"] + in_mat + for_aud + ". " + parts["tag"]
    d2 = parts["brand"] + " " + parts["adj"] + " " + parts["noun"] + in_mat + ", " + parts["var"] + for_aud + ". " + parts["tag"]
    # an empty variant would leave "Available as ." / ", ." artefacts; every subcategory has variants, so no cleanup
    tpl = rng.integers(3, size=n)
    description = np.where(tpl == 0, d0, np.where(tpl == 1, d1, d2)).astype(object)

    rank = rng.permutation(n)
    popularity = (rank + 1.0) ** -0.8

    width = max(6, len(str(n - 1)))
    item_id = np.char.add("i", np.char.zfill(np.arange(n).astype(str), width)).astype(object)
    frame = pd.DataFrame(
        {
            "title": title,
            "category": parts["leaf"],
            "brand": parts["brand"],
            "price": price.astype(np.float64),
            "description": description,
            "top_category": parts["top"],
            "subcategory": np.asarray(SUBCATEGORY_KEYS, dtype=object)[sub],
            "popularity": popularity.astype(np.float64),
            "adj_idx": adj,
        }
    )
    # shuffle rows so that item ids carry no information about the subcategory
    frame = frame.iloc[rng.permutation(n)].reset_index(drop=True)
    frame.insert(0, "item_id", item_id)
    return frame
