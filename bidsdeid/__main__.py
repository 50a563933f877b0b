from bidsdeid.cli import main

main()
