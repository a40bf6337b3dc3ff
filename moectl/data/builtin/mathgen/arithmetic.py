"""Multi-step arithmetic word problems in the spirit of GSM8K, computed exactly with integers."""

from __future__ import annotations

import random
from fractions import Fraction

from moectl.data.builtin.mathgen import words
from moectl.data.builtin.mathgen.base import Notation, Problem, decimal, frac_plain, frac_tex, money


def _cents_in(rng: random.Random, low: int, high: int, step: int) -> int:
    return rng.randrange(low, high + 1, step)


def shopping(rng: random.Random, nt: Notation) -> Problem:
    name = rng.choice(words.NAMES)
    store = rng.choice(words.STORES)
    currency = rng.choice(words.CURRENCIES)
    (s1, p1, r1, st1), (s2, p2, r2, st2) = rng.sample(words.GOODS, 2)
    q1, q2 = rng.randint(2, 9), rng.randint(2, 7)
    c1, c2 = _cents_in(rng, *r1, st1), _cents_in(rng, *r2, st2)
    total = q1 * c1 + q2 * c2
    bill = next(b for b in (1000, 2000, 5000, 10000, 20000, 50000) if b >= total)
    change = bill - total
    ask = rng.randrange(3)
    opener = rng.choice(
        [
            f"{name} goes to the {store} and buys {q1} {p1} at {money(c1, currency)} each "
            f"and {q2} {p2} at {money(c2, currency)} each.",
            f"At the {store}, {p1} cost {money(c1, currency)} apiece and {p2} cost "
            f"{money(c2, currency)} apiece. {name} picks up {q1} {p1} and {q2} {p2}.",
            f"{name} needs {q1} {p1} and {q2} {p2}. One {s1} costs {money(c1, currency)} "
            f"and one {s2} costs {money(c2, currency)} at the {store}.",
        ]
    )
    steps = [
        f"The {p1} cost {nt.calc_line([q1, Fraction(c1, 100)], ['*'], Fraction(q1 * c1, 100))} "
        f"{currency}.",
        f"The {p2} cost {nt.calc_line([q2, Fraction(c2, 100)], ['*'], Fraction(q2 * c2, 100))} "
        f"{currency}.",
        "Together that is "
        + nt.calc_line(
            [Fraction(q1 * c1, 100), Fraction(q2 * c2, 100)], ["+"], Fraction(total, 100)
        )
        + f" {currency}.",
    ]
    if ask == 0:
        question = f"{opener} How much does {name} spend in total?"
        return Problem(
            "shopping_total", question, steps, money(total, currency), value=Fraction(total, 100)
        )
    question = f"{opener} {name} pays with a {money(bill, currency)} note. " + rng.choice(
        [
            "How much change should they get back?",
            "What is the change?",
            f"How much money does {name} receive in change?",
        ]
    )
    steps.append(
        f"The change is {nt.calc_line([Fraction(bill, 100), Fraction(total, 100)], ['-'], Fraction(change, 100))} {currency}."  # noqa: E501
    )
    return Problem(
        "shopping_change", question, steps, money(change, currency), value=Fraction(change, 100)
    )


def wages(rng: random.Random, nt: Notation) -> Problem:
    name = rng.choice(words.NAMES)
    job = rng.choice(words.JOBS)
    currency = rng.choice(words.CURRENCIES)
    rate, hours, days = rng.randint(8, 30), rng.randint(2, 8), rng.randint(3, 12)
    earned = rate * hours * days
    share = rng.choice(
        [
            Fraction(1, 2),
            Fraction(1, 3),
            Fraction(1, 4),
            Fraction(1, 5),
            Fraction(2, 5),
            Fraction(3, 4),
            Fraction(1, 10),
        ]
    )
    while earned * share.numerator % share.denominator:
        days += 1
        earned = rate * hours * days
    spent = earned * share
    thing = rng.choice(
        [
            "a new bike",
            "rent",
            "a concert ticket",
            "groceries",
            "a laptop fund",
            "a gift for a friend",
        ]
    )
    question = rng.choice(
        [
            f"{name} earns {money(rate * 100, currency)} an hour {job}. {name} works {hours} hours "
            f"a day for {days} days and spends {frac_plain(share)} of the money on {thing}. "
            "How much money is left?",
            f"Working {hours} hours each day for {days} days, {name} makes "
            f"{money(rate * 100, currency)} per hour {job}. If {frac_plain(share)} of the "
            f"earnings goes to {thing}, how much does {name} keep?",
        ]
    )
    steps = [
        f"Hours worked: {nt.calc_line([hours, days], ['*'], hours * days)}.",
        f"Money earned: {nt.calc_line([hours * days, rate], ['*'], earned)} {currency}.",
        f"Spent on {thing}: {nt.m(frac_tex(share), frac_plain(share))} of {earned} is "
        f"{nt.calc_line([earned, share.denominator], ['/'], Fraction(earned, share.denominator))}"
        + (
            f", times {share.numerator} gives {spent} {currency}."
            if share.numerator > 1
            else f" {currency}."
        ),
        f"Left over: {nt.calc_line([earned, spent], ['-'], earned - spent)} {currency}.",
    ]
    left = int(earned - spent)
    return Problem("wages", question, steps, money(left * 100, currency), value=left)


def sharing(rng: random.Random, nt: Notation) -> Problem:
    giver, friend = words.pick_names(rng, 2)
    plural = rng.choice(words.COUNTABLES)[1]
    people, each = rng.randint(2, 9), rng.randint(3, 25)
    given, bought = rng.randint(2, 30), rng.randint(0, 20)
    start = people * each + given - bought
    if start <= given:
        start += people * 10
        each += 10
    question = rng.choice(
        [
            f"{giver} has {start} {plural}. {giver} gives {given} to {friend}"
            + (f" and then buys {bought} more" if bought else "")
            + f". The rest are shared equally among {people} children. How many {plural} does "
            "each child get?",
            f"There are {start} {plural} in a box. {friend} takes {given} of them"
            + (f", and {giver} adds {bought} new ones" if bought else "")
            + f". If the {plural} are then split evenly into {people} groups, how many are in "
            "each group?",
        ]
    )
    after = start - given
    steps = [f"After giving some away: {nt.calc_line([start, given], ['-'], after)}."]
    if bought:
        steps.append(f"After adding more: {nt.calc_line([after, bought], ['+'], after + bought)}.")
        after += bought
    steps.append(f"Each share: {nt.calc_line([after, people], ['/'], after // people)}.")
    return Problem("sharing", question, steps, str(after // people), value=after // people)


def travel(rng: random.Random, nt: Notation) -> Problem:
    name = rng.choice(words.NAMES)
    verb, vehicle = rng.choice(words.VEHICLES)
    v1, v2 = rng.randrange(20, 121, 5), rng.randrange(20, 121, 5)
    t1, t2 = rng.choice([1, 2, 3, Fraction(1, 2), Fraction(3, 2)]), rng.randint(1, 4)
    d1, d2 = v1 * t1, v2 * t2
    unit = rng.choice(["km", "miles"])
    speed = "km/h" if unit == "km" else "mph"
    ask_avg = rng.random() < 0.4
    question = (
        f"{name} {verb} a {vehicle} at {v1} {speed} for {decimal(t1)} hours, then at {v2} {speed} "
        f"for {t2} hours. "
    )
    steps = [
        f"First part: {nt.calc_line([v1, t1], ['*'], d1)} {unit}.",
        f"Second part: {nt.calc_line([v2, t2], ['*'], d2)} {unit}.",
        f"Total distance: {nt.calc_line([d1, d2], ['+'], d1 + d2)} {unit}.",
    ]
    if not ask_avg:
        question += rng.choice(
            ["How far does the trip go in total?", f"How many {unit} is that altogether?"]
        )
        return Problem(
            "travel_distance",
            question,
            steps,
            f"{decimal(d1 + d2)} {unit}",
            value=Fraction(d1 + d2),
        )
    hours = t1 + t2
    avg = Fraction(d1 + d2) / hours
    question += "What is the average speed for the whole trip?"
    steps += [
        f"Total time: {nt.calc_line([t1, t2], ['+'], hours)} hours.",
        f"Average speed is distance over time: {nt.m(frac_tex(avg), frac_plain(avg))} {speed}"
        + ("." if avg.denominator == 1 else f", about {float(avg):.2f} {speed}."),
    ]
    return Problem(
        "travel_average", question, steps, f"{nt.num(avg)} {speed}", frac_tex(avg), value=avg
    )


def recipe(rng: random.Random, nt: Notation) -> Problem:
    dish = rng.choice(words.DISHES)
    ingredient, unit = rng.choice(words.INGREDIENTS)
    serves = rng.choice([2, 3, 4, 6, 8])
    want = rng.choice([n for n in (2, 3, 4, 5, 6, 9, 10, 12, 16, 20) if n != serves])
    amount = Fraction(rng.randint(1, 12), rng.choice([1, 2, 4]))
    needed = amount * want / serves
    name = rng.choice(words.NAMES)
    question = rng.choice(
        [
            f"A recipe for {dish} that serves {serves} people uses {frac_plain(amount)} {unit} of "
            f"{ingredient}. How much {ingredient} is needed to serve {want} people?",
            f"{name} is making {dish}. The recipe uses {frac_plain(amount)} {unit} of "
            f"{ingredient} for {serves} servings. How many {unit} are needed for {want} servings?",
        ]
    )
    per = amount / serves
    steps = [
        f"For one serving: {nt.m(frac_tex(amount) + ' ' + nt.times + ' ' + frac_tex(Fraction(1, serves)) + ' = ' + frac_tex(per), f'{frac_plain(amount)} / {serves} = {frac_plain(per)}')} {unit}.",  # noqa: E501
        f"For {want} servings: {nt.m(f'{want} {nt.times} {frac_tex(per)} = {frac_tex(needed)}', f'{want} * {frac_plain(per)} = {frac_plain(needed)}')} {unit}.",  # noqa: E501
    ]
    if needed.denominator != 1:
        steps.append(f"As a decimal that is {float(needed):g} {unit}.")
    return Problem(
        "recipe", question, steps, f"{nt.num(needed)} {unit}", frac_tex(needed), value=needed
    )


def inventory(rng: random.Random, nt: Notation) -> Problem:
    store = rng.choice(words.STORES)
    _, plural = rng.choice(words.COUNTABLES)
    pct = rng.choice([10, 20, 25, 30, 40, 50, 60, 75])
    start = rng.randrange(40, 801, 20)
    sold1 = start * pct // 100
    delivered, sold2 = rng.randrange(10, 201, 5), rng.randint(5, 60)
    left = start - sold1 + delivered - sold2
    week = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    day1, day2 = sorted(rng.sample(week, 2), key=week.index)
    question = (
        f"A {store} starts the week with {start} {plural}. On {day1} it sells {pct}% of them. "
        f"A delivery then brings {delivered} more, and on {day2} it sells another {sold2}. "
        + rng.choice([f"How many {plural} are left?", "How many remain at the end?"])
    )
    steps = [
        f"{pct}% of {start} is {nt.calc_line([start, pct, 100], ['*', '/'], sold1)}.",
        f"After {day1}: {nt.calc_line([start, sold1], ['-'], start - sold1)}.",
        f"After the delivery: {nt.calc_line([start - sold1, delivered], ['+'], start - sold1 + delivered)}.",  # noqa: E501
        f"After {day2}: {nt.calc_line([start - sold1 + delivered, sold2], ['-'], left)}.",
    ]
    return Problem("inventory", question, steps, str(left), value=left)


def discount(rng: random.Random, nt: Notation) -> Problem:
    thing = rng.choice(
        ["jacket", "bicycle", "lamp", "pair of shoes", "backpack", "tablet", "chair", "watch"]
    )
    currency = rng.choice(words.CURRENCIES)
    price = rng.randrange(20, 401, 20)
    off = rng.randrange(10, 55, 5)
    tax = rng.choice([5, 10, 15, 20])
    sale = Fraction(price * (100 - off), 100)
    final = sale * (100 + tax) / 100
    question = rng.choice(
        [
            f"A {thing} costs {money(price * 100, currency)}. It is on sale for {off}% off, and "
            f"then a {tax}% sales tax is added. What is the final price?",
            f"The {thing} is marked at {money(price * 100, currency)}. After a {off}% discount, "
            f"{tax}% tax is charged on the sale price. How much does the customer pay?",
        ]
    )
    steps = [
        f"Discount: {nt.calc_line([price, off, 100], ['*', '/'], Fraction(price * off, 100))}.",
        f"Sale price: {nt.calc_line([price, Fraction(price * off, 100)], ['-'], sale)}.",
        f"Tax: {nt.calc_line([sale, tax, 100], ['*', '/'], sale * tax / 100)}.",
        f"Final price: {nt.calc_line([sale, sale * tax / 100], ['+'], final)}.",
    ]
    cents = int(final * 100)
    return Problem("discount_tax", question, steps, money(cents, currency), value=final)


def clock(rng: random.Random, nt: Notation) -> Problem:
    name = rng.choice(words.NAMES)
    task = rng.choice(words.TASKS)
    hour, minute = rng.randint(6, 15), rng.randrange(0, 60, 5)
    count, each, pause = rng.randint(3, 9), rng.randrange(10, 50, 5), rng.randrange(5, 20, 5)
    total = count * each + (count - 1) * pause
    end = hour * 60 + minute + total
    start_s, end_s = f"{hour}:{minute:02d}", f"{end // 60 % 24}:{end % 60:02d}"
    question = (
        f"{name} starts at {start_s} and has {count} {task} to finish. Each one takes {each} "
        f"minutes, with a {pause}-minute break between consecutive ones. "
        + rng.choice(["At what time does " + name + " finish?", "When is the last one done?"])
    )
    steps = [
        f"Working time: {nt.calc_line([count, each], ['*'], count * each)} minutes.",
        f"Breaks: there are {count - 1} of them, "
        f"{nt.calc_line([count - 1, pause], ['*'], (count - 1) * pause)} minutes.",
        f"Total: {nt.calc_line([count * each, (count - 1) * pause], ['+'], total)} minutes, "
        f"which is {total // 60} h {total % 60} min.",
        f"Starting at {start_s}, the finish time is {end_s}.",
    ]
    return Problem("clock_time", question, steps, end_s, value=end % (24 * 60))


def work_rate(rng: random.Random, nt: Notation) -> Problem:
    container = rng.choice(words.CONTAINERS)
    while True:
        a, b = rng.sample(range(2, 16), 2)
        if 60 * a * b % (a + b) == 0:
            break
    together = Fraction(a * b, a + b)
    minutes = int(together * 60)
    question = rng.choice(
        [
            f"One pipe can fill a {container} in {a} hours and a second pipe can fill it in {b} "
            "hours. How long does it take with both pipes open?",
            f"Working alone, pump A fills the {container} in {a} hours and pump B in {b} hours. "
            "If both run together, how many minutes does filling take?",
        ]
    )
    rate = Fraction(1, a) + Fraction(1, b)
    steps = [
        "Add the rates: "
        + nt.m(
            rf"\frac{{1}}{{{a}}} + \frac{{1}}{{{b}}} = {frac_tex(rate)}",
            f"1/{a} + 1/{b} = {frac_plain(rate)}",
        )
        + " of the job per hour.",
        "The time is the reciprocal: "
        + nt.m(f"{frac_tex(1 / rate)}", frac_plain(1 / rate))
        + f" hours, which is {nt.calc_line([together, 60], ['*'], minutes)} minutes.",
    ]
    return Problem("work_rate", question, steps, f"{minutes} minutes", value=minutes)


def ratio(rng: random.Random, nt: Notation) -> Problem:
    first, second = words.pick_names(rng, 2)
    currency = rng.choice(words.CURRENCIES)
    p, q = rng.sample(range(1, 10), 2)
    unit = rng.randint(2, 40)
    total = (p + q) * unit
    question = rng.choice(
        [
            f"{first} and {second} share {money(total * 100, currency)} in the ratio {p}:{q}. "
            f"How much does {second} get?",
            f"A prize of {total} {currency} is split between {first} and {second} so that their "
            f"shares are in the ratio {p} to {q}. What is {second}'s share?",
        ]
    )
    steps = [
        f"There are {nt.calc_line([p, q], ['+'], p + q)} parts in total.",
        f"One part is {nt.calc_line([total, p + q], ['/'], unit)} {currency}.",
        f"{second} gets {nt.calc_line([q, unit], ['*'], q * unit)} {currency}.",
    ]
    return Problem("ratio", question, steps, money(q * unit * 100, currency), value=q * unit)
