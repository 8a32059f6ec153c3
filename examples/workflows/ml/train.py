"""Fits one model by least squares (normal equations, pure Python) on the first 80% of
the data and writes its coefficients to /shared/model-<kind>.txt."""
import csv
import sys

kind = sys.argv[1]
with open("/shared/data.csv") as f:
    rows = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(f)]
train = rows[: int(len(rows) * 0.8)]
features = {"mean": lambda x: [1.0], "linear": lambda x: [1.0, x], "quadratic": lambda x: [1.0, x, x * x]}[kind]

X = [features(x) for x, _ in train]
n = len(X[0])
# Normal equations A w = b, solved by Gaussian elimination.
A = [[sum(r[i] * r[j] for r in X) for j in range(n)] for i in range(n)]
b = [sum(r[i] * y for r, (_, y) in zip(X, train)) for i in range(n)]
for col in range(n):
    pivot = max(range(col, n), key=lambda r: abs(A[r][col]))
    A[col], A[pivot], b[col], b[pivot] = A[pivot], A[col], b[pivot], b[col]
    for r in range(col + 1, n):
        f = A[r][col] / A[col][col]
        A[r] = [a - f * c for a, c in zip(A[r], A[col])]
        b[r] -= f * b[col]
w = [0.0] * n
for i in reversed(range(n)):
    w[i] = (b[i] - sum(A[i][j] * w[j] for j in range(i + 1, n))) / A[i][i]
with open(f"/shared/model-{kind}.txt", "w") as out:
    out.write(" ".join(f"{c:.6f}" for c in w) + "\n")
print(kind, "coefficients:", " ".join(f"{c:.3f}" for c in w))
