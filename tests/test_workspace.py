"""The workspace object: what it builds once and reuses."""

import numpy as np

from agile_modeling.workspace import Workspace


def test_the_neighbour_index_is_built_once_while_the_pool_is_unchanged(tmp_path, clustered_pool):
    x, _ = clustered_pool
    ws = Workspace(tmp_path)
    store = ws.store(x.shape[1], "test-encoder")
    store.append(x[:3000], [f"mem://{i}" for i in range(3000)], [f"h{i}" for i in range(3000)])
    first = ws.index(ws.store())
    first.search(x[:1].astype(np.float32), 5)  # built now
    assert ws.index(ws.store()) is first  # a later round searches the same built index
    store.append(x[3000:], [f"mem://{i}" for i in range(3000, 6000)], [f"h{i}" for i in range(3000, 6000)])
    grown = ws.index(ws.store())
    assert grown is not first and len(grown) == 6000
    _, ids = grown.search(x[5999:].astype(np.float32), 1)
    assert ids[0, 0] == 5999  # the new images are searched
