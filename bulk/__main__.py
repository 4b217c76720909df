from facegrid.bulk.cli import main

main()
