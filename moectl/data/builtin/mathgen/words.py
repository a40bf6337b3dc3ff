"""Vocabulary for word problems: people, things, places and units, so that contexts vary widely."""

from __future__ import annotations

import random

NAMES = (
    "Aisha",
    "Ben",
    "Carlos",
    "Dana",
    "Elif",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kofi",
    "Lena",
    "Mateo",
    "Nadia",
    "Oscar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wei",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Amara",
    "Bruno",
    "Chloe",
    "Dmitri",
    "Esther",
    "Felix",
    "Gita",
    "Hassan",
    "Ivy",
    "Jonas",
    "Keiko",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pablo",
    "Ravi",
    "Sofia",
    "Tomas",
    "Uma",
    "Victor",
    "Wanda",
    "Yara",
    "Zane",
    "Mr. Lopez",
    "Ms. Okafor",
    "Dr. Chen",
    "Grandma Rose",
    "Coach Miller",
    "Mrs. Novak",
)

# (singular, plural, price range in cents, step in cents)
GOODS = (
    ("notebook", "notebooks", (150, 600), 25),
    ("pencil", "pencils", (25, 150), 25),
    ("apple", "apples", (25, 125), 25),
    ("sandwich", "sandwiches", (300, 900), 50),
    ("ticket", "tickets", (500, 2500), 100),
    ("book", "books", (600, 2400), 100),
    ("plant", "plants", (300, 1500), 50),
    ("T-shirt", "T-shirts", (800, 2500), 100),
    ("bag of rice", "bags of rice", (200, 800), 50),
    ("candle", "candles", (200, 700), 50),
    ("cupcake", "cupcakes", (150, 450), 25),
    ("puzzle", "puzzles", (700, 2000), 100),
    ("light bulb", "light bulbs", (150, 600), 25),
    ("bottle of juice", "bottles of juice", (100, 400), 25),
    ("pack of cards", "packs of cards", (200, 800), 50),
)

COUNTABLES = (
    ("marble", "marbles"),
    ("sticker", "stickers"),
    ("cookie", "cookies"),
    ("stamp", "stamps"),
    ("seashell", "seashells"),
    ("trading card", "trading cards"),
    ("egg", "eggs"),
    ("balloon", "balloons"),
    ("crayon", "crayons"),
    ("bead", "beads"),
    ("strawberry", "strawberries"),
    ("toy car", "toy cars"),
    ("comic book", "comic books"),
    ("tulip", "tulips"),
)

STORES = (
    "bakery",
    "bookstore",
    "garden center",
    "toy shop",
    "grocery store",
    "hardware store",
    "market stall",
    "pet shop",
    "farm stand",
    "stationery shop",
)
JOBS = (
    "tutoring",
    "babysitting",
    "walking dogs",
    "washing cars",
    "working at a cafe",
    "mowing lawns",
    "delivering newspapers",
    "fixing bikes",
    "selling lemonade",
)
VEHICLES = (
    ("drives", "car"),
    ("cycles", "bike"),
    ("rides", "train"),
    ("sails", "boat"),
    ("rides", "bus"),
    ("flies", "small plane"),
)
INGREDIENTS = (
    ("flour", "cups"),
    ("sugar", "cups"),
    ("butter", "tablespoons"),
    ("milk", "cups"),
    ("rice", "cups"),
    ("oats", "cups"),
    ("honey", "tablespoons"),
    ("water", "liters"),
    ("tomatoes", "kilograms"),
)
DISHES = ("pancakes", "soup", "cookies", "muffins", "curry", "bread", "salad", "porridge")
TASKS = (
    "emails",
    "essays",
    "laps",
    "math problems",
    "songs",
    "paintings",
    "repairs",
    "deliveries",
    "interviews",
    "drawings",
)
CONTAINERS = ("tank", "pool", "barrel", "reservoir", "aquarium", "cistern")
CURRENCIES = ("dollars", "dollars", "euros", "pounds")


def pick_names(rng: random.Random, k: int) -> list[str]:
    """k different names."""
    return rng.sample(NAMES, k)
