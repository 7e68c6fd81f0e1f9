"""Fixtures of the library tests: a MovieLens-100K-shaped dataset written by the tests themselves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
OCCUPATIONS = ["administrator", "artist", "educator", "engineer", "librarian", "other", "programmer", "student",
               "technician", "writer"]
FIRST_SECOND, LAST_SECOND = 874_724_710, 893_286_638  # MovieLens-100K's time range: 1997-09-20 .. 1998-04-22


@dataclass(frozen=True)
class MovieLensShaped:
    directory: Path
    items: pd.DataFrame  # the frames exactly as written to the CSVs
    interactions: pd.DataFrame
    users: pd.DataFrame


def write_movielens_shaped(directory: Path, n_users: int = 943, n_items: int = 1682, n_ratings: int = 100_000,
                           min_per_user: int = 20, seed: int = 0) -> MovieLensShaped:
    """Random data in the shape of MovieLens-100K converted to the standard schema (the counts, columns and time
    range of the real files; values drawn at random, nothing copied from the real data):

    - ``items.csv``: item_id (1..n), title (some with a comma, so quoted), release_year, genre (space-separated),
      category (the first genre); no brand, price or description;
    - ``interactions.csv``: user_id, item_id, timestamp (Unix seconds), scenario ``movielens-100k``, rating 1-5;
      each user rates distinct items, at least ``min_per_user`` (user 3 exactly that many); about half the ratings
      share their second with another rating of the same user (ties); rows are not sorted by user or time;
    - ``users.csv``: user_id plus the profile columns age, gender, occupation, zip_code (a few not numeric).
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    n_genres = rng.integers(1, 4, n_items)
    genre_sets = [" ".join(g) for g in np.split(rng.choice(GENRES, n_genres.sum()), np.cumsum(n_genres)[:-1])]
    ids = np.arange(1, n_items + 1)
    items = pd.DataFrame({
        "item_id": ids,
        "title": np.where(ids % 10 == 0, [f"Title {i}, The" for i in ids], [f"Title {i}" for i in ids]),
        "release_year": rng.integers(1922, 1999, n_items),
        "genre": genre_sets,
        "category": [g.split(" ")[0] for g in genre_sets],
    })

    zips = np.char.zfill(rng.integers(0, 100_000, n_users).astype(str), 5).astype(object)
    zips[rng.random(n_users) < 0.02] = "T8H1N"
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "age": rng.integers(7, 74, n_users),
                          "gender": rng.choice(["M", "F"], n_users), "occupation": rng.choice(OCCUPATIONS, n_users),
                          "zip_code": zips})

    # ratings per user: min_per_user each, the rest skewed over users (some users rate many movies)
    weights = rng.lognormal(0.0, 0.8, n_users)
    weights[2] = 0.0  # one user with exactly min_per_user ratings, on the edge of the history gate
    counts = min_per_user + rng.multinomial(n_ratings - min_per_user * n_users, weights / weights.sum())
    assert counts.max() <= n_items
    # distinct items per user, popular items more often: Gumbel top-k over log-popularity
    keys = np.log(rng.zipf(1.5, n_items).clip(max=1000))[None, :] + rng.gumbel(size=(n_users, n_items))
    ranked = np.argsort(-keys, axis=1)
    chosen = ranked[np.arange(n_items)[None, :] < counts[:, None]]  # row-major: user by user
    user = np.repeat(np.arange(n_users), counts)

    # times: per user a start, then gaps of 0 s (a tie) half of the time, else seconds to days
    gaps = np.where(rng.random(n_ratings) < 0.5, 0, rng.exponential(3_000.0, n_ratings).astype(np.int64) + 1)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gaps[first] = 0
    elapsed = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], counts)
    span = elapsed[first + counts - 1]
    start = FIRST_SECOND + (rng.random(n_users) * (LAST_SECOND - FIRST_SECOND - span)).astype(np.int64)
    start[0], start[1] = FIRST_SECOND, LAST_SECOND - span[1]  # the range's two ends are hit exactly
    order = rng.permutation(n_ratings)  # like the real file, not sorted by user or time
    interactions = pd.DataFrame({
        "user_id": user + 1,
        "item_id": chosen + 1,
        "timestamp": start[user] + elapsed,
        "scenario": "movielens-100k",
        "rating": rng.choice(np.arange(1, 6), n_ratings, p=[0.0611, 0.1137, 0.27145, 0.34174, 0.21201]),
    }).iloc[order].reset_index(drop=True)

    for name, frame in (("items", items), ("interactions", interactions), ("users", users)):
        frame.to_csv(directory / f"{name}.csv", index=False)
    return MovieLensShaped(directory, items, interactions, users)


@pytest.fixture(scope="session")
def movielens_shaped(tmp_path_factory) -> MovieLensShaped:
    return write_movielens_shaped(tmp_path_factory.mktemp("movielens_shaped"))
