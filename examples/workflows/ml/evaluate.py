"""Scores each model on the last 20% of the data and names the best in /shared/best.txt."""
import csv

with open("/shared/data.csv") as f:
    rows = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(f)]
test = rows[int(len(rows) * 0.8):]
scores = {}
for kind in ["mean", "linear", "quadratic"]:
    with open(f"/shared/model-{kind}.txt") as f:
        w = [float(c) for c in f.read().split()]
    mse = sum((y - sum(c * x**i for i, c in enumerate(w))) ** 2 for x, y in test) / len(test)
    scores[kind] = mse
    print(f"{kind}: mse {mse:.3f}")
best = min(scores, key=scores.get)
assert best == "quadratic", f"the quadratic model should win, got {best}"
with open("/shared/best.txt", "w") as out:
    out.write(f"best model: {best} (mse {scores[best]:.3f})\n")
