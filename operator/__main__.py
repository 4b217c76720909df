from facegrid.operator.main import main

main()
