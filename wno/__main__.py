from wno.cli import main

main()
