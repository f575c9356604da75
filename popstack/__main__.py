from popstack.cli import main

main()
