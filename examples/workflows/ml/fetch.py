"""Makes a deterministic dataset: y = 3x^2 - 2x + 1 plus noise, written to /shared."""
import csv
import os
import random

rows = int(os.environ.get("ROWS", "300"))
rng = random.Random(42)
with open("/shared/data.csv", "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["x", "y"])
    for _ in range(rows):
        x = rng.uniform(-3, 3)
        writer.writerow([f"{x:.5f}", f"{3 * x * x - 2 * x + 1 + rng.gauss(0, 0.5):.5f}"])
print(f"wrote {rows} rows of {os.environ.get('DATASET')} to /shared/data.csv")
