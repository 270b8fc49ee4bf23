"""Brute-force reference of the long2short DPO pairs (report sec. 2.4), written from the rule
and not from the code: the positive is the shortest correct response; a response is a negative
iff it is LONGER than the positive and either incorrect, or correct and at least `ratio` x the
positive's length. Of each kind (incorrect, long correct) the longest qualifying one is the
pair's negative. Ties: lowest sample index."""


def qualifying_negatives(lens, ok, pos, ratio=1.5):
    """(incorrect, long correct) sample indices of one group that may be pos's negative."""
    longer = [j for j in range(len(lens)) if lens[j] > lens[pos]]
    wrong = [j for j in longer if not ok[j]]
    right = [j for j in longer if ok[j] and lens[j] >= ratio * lens[pos]]
    return wrong, right


def np_pairs(lengths, correct, ratio=1.5):
    """The set of (prompt b, positive, negative) pairs over groups lengths, correct [B, K]."""
    out = set()
    for b, (lens, ok) in enumerate(zip(lengths, correct, strict=True)):
        right = [j for j in range(len(lens)) if ok[j]]
        if not right:
            continue
        pos = min(right, key=lambda j: (lens[j], j))
        for kind in qualifying_negatives(lens, ok, pos, ratio):
            if kind:
                out.add((b, pos, max(kind, key=lambda j: (lens[j], -j))))
    return out
