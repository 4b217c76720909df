from facegrid.gateway.main import main

main()
