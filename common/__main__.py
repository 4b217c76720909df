from facegrid.cli import main

main()
