from facegrid.operator.local.main import main

main()
