"""Printed documents (receipts, menus, signs, posters, tickets, book covers) for OCR, Calculator
and GoogleSearch targets."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mpi_ray.data.gta_policy import images
from mpi_ray.data.gta_policy.instances import Step
from mpi_ray.data.gta_policy.scenarios.draft import Draft, money, tidy

MENU_ITEMS = (
    ("Latte", 4.5), ("Cappuccino", 4.25), ("Espresso", 2.75), ("Green tea", 2.8), ("Muffin", 3.25),
    ("Bagel", 2.9), ("Croissant", 3.1), ("Orange juice", 3.6), ("Sandwich", 7.8), ("Salad", 8.4),
    ("Soup", 5.5), ("Cookie", 1.75),
)
SHOPS = ("Sunny Cafe", "Blue Door Bakery", "Corner Deli", "Maple Bistro", "Harbor Coffee", "Green Leaf Diner")
BOOKS = (
    ("The Old Man and the Sea", "Ernest Hemingway"), ("Pride and Prejudice", "Jane Austen"),
    ("Moby-Dick", "Herman Melville"), ("The Hobbit", "J. R. R. Tolkien"), ("Little Women", "Louisa May Alcott"),
    ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"), ("Jane Eyre", "Charlotte Bronte"),
)
LANDMARKS = (
    ("Eiffel Tower", "Paris"), ("Golden Gate Bridge", "San Francisco"), ("Colosseum", "Rome"),
    ("Big Ben", "London"), ("Sydney Opera House", "Sydney"), ("Statue of Liberty", "New York"),
    ("Taj Mahal", "Agra"), ("Brandenburg Gate", "Berlin"),
)
EVENTS = ("JAZZ NIGHT", "BOOK FAIR", "FOOD FESTIVAL", "CHARITY RUN", "ART SHOW", "SCIENCE EXPO")
VENUES = ("City Hall", "Central Park", "the Old Library", "Riverside Arena", "Town Square")
MONTHS = ("March", "April", "May", "June", "July", "September", "October")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CITIES = ("Boston", "Chicago", "Denver", "Seattle", "Austin", "Portland", "Atlanta")


@dataclass(frozen=True)
class Document:
    lines: list[str]
    subject: str
    description: str
    questions: tuple[str, ...]  # user queries whose answer is printed on the document
    background: str = "white"
    ink: str = "black"

    def render(self) -> bytes:
        return images.text_card(self.lines, background=self.background, ink=self.ink)

    def read(self, name: str) -> Step:
        """The OCR step that has read this document."""
        return Step("OCR", {"image": name}, "\n".join(self.lines))


def _receipt(rng: random.Random) -> tuple[Document, list[tuple[str, float]], float]:
    shop = rng.choice(SHOPS)
    items = rng.sample(MENU_ITEMS, 3)
    total = round(sum(price for _, price in items), 2)
    lines = [shop.upper(), *(f"{item:<13}{money(price):>6}" for item, price in items), f"{'TOTAL':<13}{money(total):>6}"]
    questions = ("What is the total amount on the receipt in {ref}?", "What did I order according to {ref}?")
    document = Document(lines, "the receipt", f"A receipt from {shop} listing three items and a total.", questions)
    return document, items, total


def _menu(rng: random.Random) -> Document:
    items = rng.sample(MENU_ITEMS, 5)
    asked = rng.choice(items)[0].lower()
    lines = ["MENU", *(f"{item:<13}{money(price):>6}" for item, price in items)]
    return Document(lines, "the menu", "A cafe menu board listing drinks and food with prices.",
                    (f"How much is a {asked} on the menu in {{ref}}?",), background="yellow")


def _opening_hours(rng: random.Random) -> Document:
    shop = rng.choice(SHOPS)
    lines = [shop, "Mon-Fri 8:00-18:00", f"Sat {rng.randint(8, 10)}:00-{rng.randint(13, 16)}:00", "Sun closed"]
    return Document(lines, "the shop sign", f"A sign on a shop door showing the opening hours of {shop}.",
                    ("Is the shop in {ref} open on Sunday?", "When does the shop in {ref} close on Saturday?"))


def _poster(rng: random.Random) -> Document:
    event, venue = rng.choice(EVENTS), rng.choice(VENUES)
    when = f"{rng.choice(DAYS)}, {rng.choice(MONTHS)} {rng.randint(1, 28)}"
    return Document([event, when, f"{rng.randint(5, 9)} PM", venue], "the poster", f"A poster announcing the {event.lower()}.",
                    ("When does the event in {ref} start?", "Where is the event in {ref} held?"), ink="blue")


def _ticket(rng: random.Random) -> Document:
    origin, destination = rng.sample(CITIES, 2)
    seat = f"{rng.randint(1, 30)}{rng.choice('ABCD')}"
    departure = f"{rng.randint(6, 21):02d}:{rng.choice(('05', '20', '45'))}"
    lines = ["TRAIN TICKET", f"From {origin}", f"To {destination}", f"Seat {seat}", f"Dep {departure}"]
    return Document(lines, "the ticket", f"A train ticket from {origin} to {destination}.",
                    ("Which seat is booked on the ticket in {ref}?", "What time does the train in {ref} leave?"))


def read_document(rng: random.Random, name: str) -> Draft:
    document = rng.choice((lambda r: _receipt(r)[0], _menu, _opening_hours, _poster, _ticket))(rng)
    return Draft(
        image=document.render(),
        subject=document.subject,
        description=document.description,
        query=rng.choice(document.questions),
        history=(),
        target=Step("OCR", {"image": name}),
        reason=f"The answer is printed on {document.subject}, so its text must be read with an OCR tool.",
    )


def price_arithmetic(rng: random.Random, name: str) -> Draft:
    document, items, total = _receipt(rng)
    question = rng.choice(("tip", "split", "repeat"))
    if question == "tip":
        percent = rng.choice((10, 15, 18, 20))
        query = f"How much is a {percent}% tip on the total in {{ref}}?"
        expression = f"{tidy(total)} * {percent} / 100"
    elif question == "split":
        people = rng.randint(2, 5)
        query = f"If {people} of us split the bill in {{ref}} evenly, how much does each person pay?"
        expression = f"{tidy(total)} / {people}"
    else:
        (first, first_price), (second, second_price) = items[0], items[1]
        count = rng.randint(2, 4)
        query = f"How much would {count} {first.lower()}s and one {second.lower()} cost at the prices in {{ref}}?"
        expression = f"{count} * {tidy(first_price)} + {tidy(second_price)}"
    return Draft(
        image=document.render(),
        subject=document.subject,
        description=document.description,
        query=query,
        history=(document.read(name),),
        target=Step("Calculator", {"expression": expression}),
        reason="The receipt has been read; what remains is arithmetic, one Python expression for the Calculator.",
        case="chain",
    )


def search_about_text(rng: random.Random, name: str) -> Draft:
    open_ended = rng.random() < 0.5
    if rng.random() < 0.5:
        title, author = rng.choice(BOOKS)
        document = Document([title, f"by {author}"], "the book cover", f"A book cover of {title} by {author}.", ())
        if open_ended:
            query, search = "Can you find some reviews of the book in {ref}?", f"{title} {author} book reviews"
        else:
            query, search = "In which year was the book in {ref} first published?", f"{title} {author} first published year"
    else:
        landmark, city = rng.choice(LANDMARKS)
        document = Document(["Welcome to the", landmark, city], "the visitor sign",
                            f"A visitor sign that welcomes people to the {landmark} in {city}.", ())
        if open_ended:
            query = "What are some fun things to do near the place on the sign in {ref}?"
            search = f"things to do near {landmark} {city}"
        else:
            query, search = "How tall is the landmark named on the sign in {ref}?", f"{landmark} height"
    kind = "open-ended, so k=4" if open_ended else "not open-ended (it has one answer), so k=1"
    return Draft(
        image=document.render(),
        subject=document.subject,
        description=document.description,
        query=query,
        history=(document.read(name),),
        target=Step("GoogleSearch", {"query": search, "k": 4 if open_ended else 1}),
        reason=f"The image names what to look up, but the answer is not in it, so it needs GoogleSearch. It is {kind}.",
        case="search-open" if open_ended else "search-closed",
    )
