import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.datasets.splits import category_wise_folds, image_wise_folds, make_folds, object_wise_folds

# image id -> object id maps: 10..120 images over 5..30 objects
object_maps = st.integers(5, 30).flatmap(
    lambda n_obj: st.lists(st.integers(0, n_obj - 1), min_size=max(10, n_obj), max_size=120).map(
        lambda objs: {f"img{i:03d}": f"obj{o}" for i, o in enumerate(objs)}
    )
)


def assert_partition(folds, ids):
    tests = [set(f.test) for f in folds]
    assert sum(len(t) for t in tests) == len(ids)
    assert set().union(*tests) == set(ids)
    for f in folds:
        assert set(f.train) | set(f.test) == set(ids)
        assert not set(f.train) & set(f.test)


@given(object_maps, st.integers(0, 2**16))
@settings(max_examples=60)
def test_image_wise_is_a_balanced_partition(objects, seed):
    folds = image_wise_folds(list(objects), 5, seed)
    assert_partition(folds, objects)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1


@given(object_maps, st.integers(0, 2**16))
@settings(max_examples=60)
def test_object_wise_never_splits_an_object(objects, seed):
    n_objects = len(set(objects.values()))
    if n_objects < 5:
        return
    folds = object_wise_folds(objects, 5, seed)
    assert_partition(folds, objects)
    fold_of = {}
    for f in folds:
        for image in f.test:
            assert fold_of.setdefault(objects[image], f.index) == f.index


def test_splits_are_deterministic_and_seeded():
    ids = {f"img{i}": f"obj{i % 12}" for i in range(60)}
    for kind in ("iw", "ow"):
        assert make_folds(kind, ids, 5, seed=1) == make_folds(kind, ids, 5, seed=1)
        assert make_folds(kind, ids, 5, seed=1) != make_folds(kind, ids, 5, seed=2)


def test_object_wise_without_objects_is_refused_clearly():
    with pytest.raises(ValueError, match="object mapping file"):
        object_wise_folds({"a": "1", "b": None, "c": "2", "d": "3", "e": "4"})


def test_too_few_items_and_unknown_kind():
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 objects"):
        object_wise_folds({f"i{n}": f"o{n % 3}" for n in range(9)})
    with pytest.raises(ValueError, match="unknown split"):
        make_folds("xx", {"a": None})


# image id -> categories shown: single objects and scenes of up to four, over 5..19 categories
category_maps = st.integers(5, 19).flatmap(
    lambda n_cat: st.lists(
        st.frozensets(st.integers(0, n_cat - 1), min_size=1, max_size=4), min_size=n_cat, max_size=80
    ).map(lambda shown: {f"img{i:03d}": frozenset(f"cat{c}" for c in cats) for i, cats in enumerate(shown)})
)


@given(category_maps, st.integers(0, 2**16))
@settings(max_examples=60)
def test_category_wise_never_trains_on_a_held_out_category(categories, seed):
    if len(set().union(*categories.values())) < 5:
        return
    folds = category_wise_folds(categories, 5, seed)
    held = [f.categories for f in folds]
    assert set().union(*held) == set().union(*categories.values())
    assert sum(len(h) for h in held) == len(set().union(*held))  # each category held out once
    for f in folds:
        assert f.categories
        assert not set(f.train) & set(f.test)
        assert set(f.train) | set(f.test) == set(categories)
        for image in f.train:
            assert not categories[image] & f.categories
        for image in f.test:
            assert categories[image] & f.categories


def test_category_wise_on_single_objects_is_a_partition():
    categories = {f"img{i:02d}": frozenset({f"cat{i % 7}"}) for i in range(42)}
    folds = make_folds("cw", categories, 5, seed=3)
    assert_partition(folds, categories)
    assert folds == make_folds("cw", categories, 5, seed=3) != make_folds("cw", categories, 5, seed=4)


def test_category_wise_needs_every_image_s_categories():
    with pytest.raises(ValueError, match="categories of every image"):
        category_wise_folds({"a": frozenset({"mug"}), "b": frozenset()})
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 categories"):
        category_wise_folds({f"i{n}": frozenset({f"c{n % 3}"}) for n in range(9)})
