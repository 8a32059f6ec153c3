# Partition $1 of 4: rows whose id mod 4 is $1, amounts doubled then halved (a stand-in
# for a real transformation), written to /shared/part-$1.csv.
part=$1
awk -F, -v p="$part" 'BEGIN { OFS = "," } $1 % 4 == p { print $1, toupper($2), ($3 * 2) / 2 }' /shared/raw.csv > "/shared/part-$part.csv"
echo "partition $part: $(wc -l < "/shared/part-$part.csv") rows"
