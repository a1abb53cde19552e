from ann_bench.cli import main

main()
