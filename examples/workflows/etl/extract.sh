# 1,000 raw rows: id,category,amount.
i=0
: > /shared/raw.csv
while [ $i -lt 1000 ]; do
    echo "$i,cat$((i % 7)),$i" >> /shared/raw.csv
    i=$((i + 1))
done
echo "extracted $(wc -l < /shared/raw.csv) rows"
