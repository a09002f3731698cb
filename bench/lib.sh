# Helpers every bench script shares (sourced: `. "$(dirname "$0")/lib.sh"`).
# ms_since T0: milliseconds since T0 (date +%s%N). median FILE: the median of one number a line.
# ratio A B: A / B with two decimals.
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
