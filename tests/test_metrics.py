import numpy as np
import pytest

from agile_modeling.metrics import binary_metrics


def test_metrics_by_hand():
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.3])
    m = binary_metrics(y, s, threshold=0.5)
    # decisions: 1 0 1 0 1 0 -> tp=2 fp=1 fn=1 tn=2
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3) and m.accuracy == pytest.approx(4 / 6)
    # ranking: 0.9(1) 0.8(1) 0.6(0) 0.4(1) 0.3(0) 0.1(0): AP = (1 + 1 + 3/4) / 3
    assert m.auc_pr == pytest.approx((1 + 1 + 0.75) / 3)
    # 9 positive-negative pairs, 8 ordered correctly
    assert m.auc_roc == pytest.approx(8 / 9)
    assert (m.positives, m.n) == (3, 6)


def test_zero_shot_threshold_and_degenerate_labels():
    m = binary_metrics(np.array([1, 0]), np.array([0.30, 0.27]), threshold=0.28)
    assert m.accuracy == 1.0
    only_neg = binary_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.5)
    assert np.isnan(only_neg.auc_pr) and only_neg.accuracy == 1.0
    with pytest.raises(ValueError):
        binary_metrics(np.zeros(3), np.zeros(4), 0.5)
